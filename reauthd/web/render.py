"""HTML rendering: `string.Template` files under templates/, every value escaped unless marked `Markup`.

No template engine dependency: the pages are few and small, and escaping by default is the one rule that
matters. Fragments built in Python are wrapped in `Markup` only after their own values were escaped.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from string import Template


class Markup(str):
    """HTML that is already safe (built from escaped parts); inserted as is."""

    __slots__ = ()


def escape(value: object) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def join(parts: list[Markup]) -> Markup:
    return Markup("".join(parts))


@cache
def _template(name: str) -> Template:
    text = resources.files("reauthd.web").joinpath("templates", name).read_text(encoding="utf-8")
    return Template(text)


def render(name: str, **values: object) -> Markup:
    """Fill templates/<name>; every value is escaped unless it is Markup. A missing value is an error."""
    return Markup(_template(name).substitute({k: escape(v) for k, v in values.items()}))
