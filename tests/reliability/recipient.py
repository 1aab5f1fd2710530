"""A person's browser on the recipient page of a real daemon: open the link from the message, press
Start login, sign in at the simulated provider, paste the address the browser lands on. Every response is
kept for the secret canaries."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import httpx

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
CONTINUE = re.compile(r'href="(/t/[^"]+)"')


def links_in(text: str, base: str) -> list[str]:
    return re.findall(re.escape(base) + r"/r/[A-Za-z0-9_\-]+", text)


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, f"the page has no CSRF field:\n{html[:2000]}"
    return found.group(1)


@dataclass
class Seen:
    """One response: what a canary must not find in it."""

    url: str
    status: int
    headers: str
    body: str


@dataclass
class Recipient:
    """Drives the page over HTTP with a cookie jar, like a browser without JavaScript."""

    base: str
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http = httpx.Client(timeout=15, event_hooks={"response": [self._record]})

    def _record(self, response: httpx.Response) -> None:
        response.read()
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        self.seen.append(Seen(str(response.request.url), response.status_code, headers, response.text))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Recipient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open_link(self, link: str) -> tuple[str, str]:
        """GET the link, then the page's Continue address (which carries the session cookie).
        Returns (task id, task page HTML)."""
        landing = self.http.get(link)
        assert landing.status_code == 200, (landing.status_code, landing.text[:500])
        found = CONTINUE.search(landing.text)
        assert found is not None, landing.text[:2000]
        page = self.http.get(self.base + found.group(1))
        assert page.status_code == 200, (page.status_code, page.text[:500])
        return found.group(1).split("/")[2], page.text

    def page(self, task_id: str) -> httpx.Response:
        return self.http.get(f"{self.base}/t/{task_id}")

    def start(self, task_id: str, html: str) -> httpx.Response:
        """Press Start login; returns the task page shown afterwards (or the refusal)."""
        answer = self.http.post(f"{self.base}/t/{task_id}/start", data={"csrf": csrf_of(html)})
        if answer.status_code == 303:
            return self.page(task_id)
        return answer

    def sign_in(self, task_id: str) -> str:
        """Follow the sign-in button to the simulated provider, allow, and return the localhost address
        the provider redirects to (not followed: nothing listens there)."""
        hop = self.http.get(f"{self.base}/t/{task_id}/signin")
        assert hop.status_code == 303, (hop.status_code, hop.text[:500])
        authorize = hop.headers["location"]
        query = parse_qs(urlsplit(authorize).query)
        form = self.http.get(authorize)
        assert form.status_code == 200, form.text[:500]
        fields = dict(re.findall(r'<input name="(\w+)" value="([^"]*)"', form.text))
        done = self.http.post(
            authorize,
            data={
                "state": query["state"][0],
                "redirect_uri": query["redirect_uri"][0],
                "action": "allow",
                **fields,
            },
        )
        assert done.status_code == 302, (done.status_code, done.text[:500])
        return done.headers["location"]

    def paste(self, task_id: str, html: str, callback_url: str) -> httpx.Response:
        return self.http.post(
            f"{self.base}/t/{task_id}/callback",
            data={"csrf": csrf_of(html), "callback_url": callback_url},
        )

    def status(self, task_id: str) -> dict[str, object]:
        answer = self.http.get(f"{self.base}/t/{task_id}/status.json")
        assert answer.status_code == 200, answer.text[:500]
        data: dict[str, object] = answer.json()
        return data
