"""Who hears about a task: `notify.urls` for everyone, `notify.routes` by provider/CPA, and escalation.

A *route* is a named list of Apprise URLs; a *channel* is one URL of a route ("default#0"). The outbox keeps
one row per channel, so a failing URL is retried without re-sending to the URLs that worked.
"""

from __future__ import annotations

from pydantic import SecretStr

from reauthd.config import NotifyConfig, NotifyRouteConfig
from reauthd.core.model import ReauthTask

DEFAULT = "default"
ESCALATION = "escalation"


def route_key(index: int, route: NotifyRouteConfig) -> str:
    return f"route:{route.name or index}"


def _matches(route: NotifyRouteConfig, provider: str, cpa: str) -> bool:
    providers = {p.lower() for p in route.providers}
    if providers and provider.lower() not in providers:
        return False
    return not route.cpas or cpa in route.cpas


def routes_for(task: ReauthTask, notify: NotifyConfig) -> list[str]:
    """The routes that hear about this task (escalation is separate: see `ESCALATION`)."""
    return routes_for_account(task.provider, task.cpa, notify)


def routes_for_account(provider: str, cpa: str, notify: NotifyConfig) -> list[str]:
    """The routes that hear about a credential of `provider` on `cpa` (escalation is separate)."""
    keys: list[str] = []
    if notify.urls:
        keys.append(DEFAULT)
    for index, route in enumerate(notify.routes):
        if _matches(route, provider, cpa):
            keys.append(route_key(index, route))
    return keys


def urls_for(route: str, notify: NotifyConfig) -> list[SecretStr]:
    """The Apprise URLs of a route; [] when the route is no longer configured."""
    if route == DEFAULT:
        return list(notify.urls)
    if route == ESCALATION:
        return list(notify.escalation.urls) if notify.escalation else []
    for index, candidate in enumerate(notify.routes):
        if route_key(index, candidate) == route:
            return list(candidate.urls)
    return []


def channel(route: str, index: int) -> str:
    return f"{route}#{index}"


def split_channel(value: str) -> tuple[str, int]:
    route, _, index = value.rpartition("#")
    return route, int(index) if index.isdigit() else -1


def channels_of(route: str, notify: NotifyConfig) -> list[str]:
    return [channel(route, i) for i in range(len(urls_for(route, notify)))]


def channel_url(value: str, notify: NotifyConfig) -> SecretStr | None:
    route, index = split_channel(value)
    urls = urls_for(route, notify)
    return urls[index] if 0 <= index < len(urls) else None


def all_channels(notify: NotifyConfig) -> list[str]:
    result = channels_of(DEFAULT, notify)
    for index, route in enumerate(notify.routes):
        result += channels_of(route_key(index, route), notify)
    result += channels_of(ESCALATION, notify)
    return result
