"""Issue 11: the page and the operator view against a hostile internet (guessing, sessions, redirects)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from reauthd.login.providers import trusted_signin_url
from reauthd.web.app import create_app
from reauthd.web.sandbox import WebSandbox
from reauthd.web.security import RateLimits
from tests.web.test_web_recipient import open_link, start

TOKEN = "op-token-0123456789abcdef0123456789abcdef"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def test_bearer_guesses_are_limited_and_logged_like_the_form(tmp_path: Path) -> None:
    limits = dataclasses.replace(RateLimits.default(), locked_out_delay_s=0.2)
    async with (
        WebSandbox(tmp_path, operator_token=TOKEN, limits=limits) as box,
        httpx.AsyncClient(timeout=10) as http,
    ):
        url = box.url("/operator")
        with capture_logs() as logs:
            answers = [
                (await http.get(url, headers={"Authorization": f"Bearer guess-{n}"})).status_code
                for n in range(8)
            ]
        assert answers[:5] == [401] * 5 and set(answers[5:]) == {429}
        refused = [e for e in logs if e["event"].startswith("operator bearer")]
        assert len(refused) == 8 and all("guess" not in str(e) for e in logs)
        assert (await http.get(url, headers={"Authorization": "Bearer"})).status_code == 429
        # Issue 11 item 6: the right token still works from the locked-out address, at once.
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert (await http.get(url, headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
        assert loop.time() - began < 0.2
        form = await http.get(box.url("/operator/login"))
        csrf = CSRF.search(form.text)
        assert csrf is not None
        wrong = await http.post(box.url("/operator/login"), data={"csrf": csrf.group(1), "token": "nope"})
        assert wrong.status_code == 429
        again = CSRF.search(wrong.text)  # every form page sets a fresh double-submit nonce
        assert again is not None
        right = await http.post(box.url("/operator/login"), data={"csrf": again.group(1), "token": TOKEN})
        assert right.status_code == 303


async def test_a_new_operator_token_ends_existing_sessions(tmp_path: Path) -> None:
    """Sessions are signed for the token: the same cookie key with another token refuses the old cookie."""
    key = b"k" * 32
    async with WebSandbox(tmp_path) as box:

        def app(token: str) -> httpx.AsyncClient:
            asgi = create_app(
                store=box.store,
                login=box.flow,
                public_url="http://testserver",
                operator_token=SecretStr(token),
                cookie_key=key,
            )
            return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://testserver")

        async with app(TOKEN) as before:
            form = await before.get("/operator/login")
            csrf = CSRF.search(form.text)
            assert csrf is not None
            signed = await before.post("/operator/login", data={"csrf": csrf.group(1), "token": TOKEN})
            assert signed.status_code == 303
            assert (await before.get("/operator")).status_code == 200
            cookies = before.cookies
        async with app(TOKEN) as same:
            same.cookies = cookies
            assert (await same.get("/operator")).status_code == 200  # same key, same token: still valid
        async with app(TOKEN[::-1]) as rotated:
            rotated.cookies = cookies
            answer = await rotated.get("/operator")
            assert answer.status_code == 303 and answer.headers["location"].endswith("/operator/login")


@pytest.mark.parametrize(
    "address",
    [
        "javascript:alert(document.cookie)",
        "data:text/html,<script>alert(1)</script>",
        "https://auth.openai.com.evil.example/oauth/authorize",
        "http://auth.openai.com/oauth/authorize",  # not https
        "https://user@auth.openai.com/oauth/authorize",
        "//evil.example/x",
    ],
)
async def test_signin_never_redirects_off_the_provider(tmp_path: Path, address: str) -> None:
    async with WebSandbox(tmp_path) as box, httpx.AsyncClient(timeout=10) as http:
        task = box.add_task("codex")
        await start(http, box, task.task_id, await open_link(http, task.link))
        session = box.store.get_login_session(task.task_id)
        assert session is not None
        good = await http.get(box.url(f"/t/{task.task_id}/signin"))
        assert good.status_code == 303  # the simulator's loopback page: allowed
        box.store.save_login_session(dataclasses.replace(session, verification_url=address), box.clock())
        answer = await http.get(box.url(f"/t/{task.task_id}/signin"))
        assert answer.status_code == 502 and "location" not in answer.headers
        assert "does not belong to the provider" in answer.text


@pytest.mark.parametrize(
    ("provider", "url", "ok"),
    [
        ("codex", "https://auth.openai.com/oauth/authorize?x=1", True),
        ("anthropic", "https://claude.ai/oauth/authorize", True),
        ("claude", "https://evil.ai/oauth/authorize", False),
        ("antigravity", "https://accounts.google.com/o/oauth2/v2/auth", True),
        ("xai", "https://accounts.x.ai/oauth2/device", True),
        ("kimi", "https://www.kimi.com/code/authorize_device", True),
        ("kimi", "https://kimi.com.evil.example/", False),
        ("some-plugin", "https://login.plugin.example/auth", True),
        ("some-plugin", "http://login.plugin.example/auth", False),
        ("codex", "http://127.0.0.1:8317/provider/codex/authorize", True),
        ("codex", "javascript://auth.openai.com/%0aalert(1)", False),
    ],
)
def test_trusted_signin_url(provider: str, url: str, ok: bool) -> None:
    assert trusted_signin_url(provider, url) is ok
