"""Canary: the management key, OAuth states/codes and callback URLs never reach logs, errors or tracebacks."""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any

import pytest
from structlog.testing import capture_logs

from reauthd.cpa import CPAClient, CPAError, ErrorStream, ReconnectPolicy
from reauthd.sim.server import SimServer
from tests.cpa.conftest import FAST_RETRY

KEY = "canary-key-7f3a9c21"
WRONG_KEY = "canary-wrong-key-55e1"


async def expect_error(call: Any) -> CPAError:
    try:
        await call
    except CPAError as exc:
        return exc
    raise AssertionError("expected a CPAError")


async def test_secrets_never_leave_the_client(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[CPAError] = []
    texts: list[str] = []
    secrets = {KEY, WRONG_KEY}
    with capture_logs() as events:
        async with SimServer(management_key=KEY, port=0) as sim:
            sim.state.set_timing(watcher_delay=0.05, exchange_delay=0.05)
            auth = sim.state.add_credential("codex", email="a@example.com")
            async with CPAClient("sim", sim.base_url, KEY, retry=FAST_RETRY) as cpa:
                minted = await cpa.auth_url("codex")
                secrets |= {minted.state, minted.url}
                pasted = sim.state.provider_login(minted.state, email="a@example.com")
                code = pasted.split("code=")[1].split("&")[0]
                secrets |= {pasted, code}
                await cpa.post_oauth_callback(pasted)
                for _ in range(100):
                    if (await cpa.get_auth_status(minted.state)).status != "wait":
                        break
                    await asyncio.sleep(0.05)
                errors.append(await expect_error(cpa.post_oauth_callback(pasted)))  # 409: already completed
                other = await cpa.auth_url("codex")
                bad = f"http://localhost:1455/auth/callback?code={code}x&state={other.state}"
                secrets |= {other.state, bad}
                errors.append(await expect_error(cpa.post_oauth_callback(bad, provider="claude")))
                raw = await cpa.download_auth_file(auth.name)
                assert b"access_token" in raw
                texts.append(repr(minted))
                texts.append(repr(cpa))
                texts.append(repr(cpa.management_key))
                texts.append(repr(cpa.health))
                texts.append(str(cpa.gate.snapshot().to_dict()))

            async with CPAClient("sim", sim.base_url, WRONG_KEY, retry=FAST_RETRY) as wrong:
                errors.append(await expect_error(wrong.list_auth_files()))
                errors.append(await expect_error(wrong.list_auth_files()))  # ClientPaused
                texts.append(repr(wrong.health))
                texts.append(str(wrong.gate.snapshot().to_dict()))
            async with CPAClient("sim", sim.base_url, WRONG_KEY, retry=FAST_RETRY) as wrong_resp:
                stream = ErrorStream(wrong_resp, reconnect=ReconnectPolicy(max_consecutive_failures=1))
                try:
                    async for _ in stream.run():
                        pass
                except CPAError as exc:
                    errors.append(exc)

    assert len(errors) == 5
    for error in errors:
        texts.append(str(error))
        texts.append(repr(error))
        texts.append("".join(traceback.format_exception(error)))
    texts.extend(repr(e) for e in events)
    texts.append(caplog.text)
    everything = "\n".join(texts)
    leaked = sorted(s for s in secrets if s in everything)
    assert leaked == [], f"secrets leaked: {len(leaked)}"
    # The canary must be able to fail: the captured material does mention what happened.
    assert "/v0/management/oauth-callback" in everything and "'sim'" in everything
    assert any(e.get("event") == "cpa.call" for e in events)
