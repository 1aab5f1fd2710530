"""Logging redaction: canary secrets never reach the output, whatever path they take."""

from __future__ import annotations

import io
import json
import logging

import httpx
import structlog

from reauthd.logging import configure_logging, scrub

MGMT = "MGMT-CANARY-91c2d"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjYW5hcnktdXNlciJ9.c2lnbmF0dXJlLWNhbmFyeQ"
STATE = "0123456789abcdef0123456789abcdef"
CODE = "CODE-CANARY-ac_5522"
CALLBACK = f"http://localhost:1455/auth/callback?code={CODE}&state={STATE}"


def capture(fmt: str = "json") -> io.StringIO:
    buf = io.StringIO()
    configure_logging("debug", fmt, stream=buf, secret_values=[MGMT])
    return buf


def assert_clean(text: str) -> None:
    for canary in (MGMT, TOKEN, STATE, CODE, "LOCAL-CANARY", "canary-user"):
        assert canary not in text, canary


def _raise_with_secret_locals() -> None:
    local_secret = "LOCAL-CANARY-0042"  # noqa: F841 - must not be rendered from the frame
    raise RuntimeError(f"CPA refused Bearer {TOKEN} for {CALLBACK}")


def test_canaries_in_fields_urls_exceptions_and_locals_never_appear() -> None:
    for fmt in ("json", "console"):
        buf = capture(fmt)
        log = structlog.get_logger("reauthd.test")
        log.info("plain", management_key=MGMT, note=f"key is {MGMT}", url=CALLBACK)
        log.info(
            "nested",
            data={"access_token": TOKEN, "inner": [f"state={STATE}"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        log.warning(f"event text with {CALLBACK}")
        try:
            _raise_with_secret_locals()
        except RuntimeError:
            log.exception("boom")
        logging.getLogger("some.library").error("lib says %s and %s", MGMT, CALLBACK)
        out = buf.getvalue()
        assert "boom" in out and "RuntimeError" in out and "_raise_with_secret_locals" in out
        assert_clean(out)


def test_json_lines_are_json() -> None:
    buf = capture("json")
    structlog.get_logger("x").info("hello", n=1)
    record = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert record["event"] == "hello" and record["n"] == 1 and record["level"] == "info"


def test_httpx_request_lines_are_silenced_or_redacted() -> None:
    buf = capture("json")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        client.get(f"http://cpa.invalid/v0/management/get-auth-status?state={STATE}")
    logging.getLogger("httpx").warning("HTTP Request: GET %s", CALLBACK)
    assert_clean(buf.getvalue())


def test_scrub_for_text_leaving_the_process() -> None:
    assert_clean(str(scrub({"msg": CALLBACK, "token": "x", "list": [f"Bearer {TOKEN}"]})))


def test_a_skipped_scheduler_tick_is_not_a_warning_but_a_missed_run_is() -> None:
    buf = capture()
    scheduler = logging.getLogger("apscheduler.scheduler")
    scheduler.warning(
        'Execution of job "Daemon._tick (trigger: interval[0:00:02], next run at: 12:00:02 UTC)" skipped: '
        "maximum number of running instances reached (1)"
    )
    scheduler.warning('Run time of job "Daemon._tick" was missed by 0:05:00')
    lines = [json.loads(line)["event"] for line in buf.getvalue().splitlines()]
    assert lines == ['Run time of job "Daemon._tick" was missed by 0:05:00']
    configure_logging("debug", "json", stream=io.StringIO())  # configuring again adds no second filter
    assert len(scheduler.filters) == 1


def test_cpa_error_text_with_token_shapes_and_emails_is_redacted() -> None:
    """Issue 11 item 7: a CPA refusal quoting the tokens it got (JSON fields, ya29., rt-, xai-, 1//) and an
    account e-mail; every one is gone from the line, and e-mails are masked unless log.mask_emails is off."""
    quoted = (
        'CPA answered 400: {"error":"bad","access_token": "at-CANARY-aaaaaaaa", "refresh_token":"CANARY-rt-1",'
        ' "id_token": "CANARY-idt"} ya29.a0CANARYGoogleAccess_token-123 rt-CANARYrefreshtoken0123456789 '
        "xai-CANARYxaikey0123456789abcdef 1//0gCANARYgooglerefresh0123456789 for alice.CANARY@example.com"
    )
    for mask in (True, False):
        buf = io.StringIO()
        configure_logging("debug", "json", stream=buf, mask_emails=mask)
        structlog.get_logger("reauthd.login.flow").warning("CPA refused the callback", error=quoted)
        logging.getLogger("httpx").warning("lib: %s", quoted)
        out = buf.getvalue()
        for canary in ("at-CANARY", "CANARY-rt-1", "CANARY-idt", "ya29.a0CANARY", "rt-CANARY", "xai-CANARY",
                       "1//0gCANARY"):  # fmt: skip
            assert canary not in out, canary
        assert ("alice.CANARY@example.com" in out) is not mask
        if mask:
            assert "a***@example.com" in out
    configure_logging("debug", "json", stream=io.StringIO())
