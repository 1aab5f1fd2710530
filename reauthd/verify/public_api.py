"""One minimal request through CPA's public API for `<prefix>/<model>`: how credentials without a probe are tested.

Vertex holds a service account, so `/api-call` cannot test it (contract §12); CPA's public API with a unique
temporary `prefix` on the credential routes a request to that credential alone (contract §5,
sdk/cliproxy/service_models.go applyModelPrefixes). The proxy API key is a secret: it is sent in the
`Authorization` header only and never appears in a log line, an exception or a stored text.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from reauthd.core.sanitize import sanitize_text

#: CPA answers a chat completion in well under this; the body is small (max_tokens=1).
MAX_BODY = 64 * 1024


class PublicAPIUnreachable(Exception):
    """CPA's public API did not answer (connect error, timeout). Transient; the message holds no secret."""


@dataclass(frozen=True, slots=True)
class PublicAnswer:
    status: int
    body: str  # sanitised and truncated


class PublicAPI:
    """CPA's OpenAI-compatible `/v1` API with reauthd's proxy API key (`[[cpa]] proxy_api_key`)."""

    def __init__(
        self,
        base_url: str,
        proxy_api_key: SecretStr,
        *,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = proxy_api_key
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=5.0),
            transport=transport,
            trust_env=False,  # an environment proxy must not see the proxy API key
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"PublicAPI(base_url={self.base_url!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def chat_once(self, model: str) -> PublicAnswer:
        """`POST /v1/chat/completions` with one tiny message and `max_tokens: 1` for `model`."""
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "ping"}],
            "max_tokens": 1,
            "stream": False,
        }
        headers = {"Authorization": f"Bearer {self._key.get_secret_value()}"}
        try:
            async with self._http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as resp:
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.aiter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size >= MAX_BODY:
                        break
                raw = b"".join(chunks)[:MAX_BODY]
                status = resp.status_code
        except httpx.HTTPError as exc:
            # str(exc) of httpx errors names the URL only (no headers); still, say it in our own words.
            raise PublicAPIUnreachable(
                f"CPA's public API at {self.base_url} did not answer ({type(exc).__name__})"
            ) from None
        return PublicAnswer(status, sanitize_text(raw.decode("utf-8", "replace")))
