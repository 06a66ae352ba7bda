"""An OpenAI-compatible moderation endpoint (``POST /v1/moderations``).

One call checks one text: ``{"input": text, "model": ...}`` answered with
``{"id", "model", "results": [{"flagged", "categories", "category_scores"}]}``
(OpenAI's shape). A flagged result is named by its first flagged category,
``endpoint:violence``. An endpoint that fails (cannot be reached, answers an
error, times out, or answers something else) lets the text through with a log
line (``fail_closed=False``, the default), or stops it (``fail_closed=True``,
``Verdict(cause="unavailable")``).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import httpx

from conversations.moderation.base import Moderator, Verdict
from conversations.providers.http import get_client

log = logging.getLogger(__name__)

UNAVAILABLE = Verdict("endpoint:unavailable", cause="unavailable")


def endpoint_url(*, base: str) -> str:
    """``…/v1`` (a base URL, as OPENAI_BASE_URL is written) or the full ``…/moderations``."""
    base = base.rstrip("/")
    return base if base.endswith("/moderations") else base + "/moderations"


def verdict_from(*, data: object) -> Verdict | None:
    """The verdict in a moderation answer; ValueError if it is not one."""
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list) or not results:
        raise ValueError("no 'results' in the answer")
    for result in results:
        if not isinstance(result, dict) or not isinstance(result.get("flagged"), bool):
            raise ValueError("a result without 'flagged'")
        if result["flagged"]:
            categories = result.get("categories")
            flagged = [str(n) for n, on in categories.items() if on] if isinstance(categories, dict) else []
            return Verdict(f"endpoint:{flagged[0] if flagged else 'flagged'}")
    return None


class EndpointModerator(Moderator):
    checks_with_calls = True

    def __init__(
        self,
        *,
        url: str,
        api_key: str = "",
        model: str = "",
        timeout: float | None = 5.0,
        fail_closed: bool = False,
    ) -> None:
        self.url = endpoint_url(base=url)
        parts = urlsplit(self.url)
        self.host = parts.hostname or ""
        if parts.port:
            self.host = f"{self.host}:{parts.port}"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.timeout = timeout
        self.fail_closed = fail_closed

    async def check(self, *, text: str) -> Verdict | None:
        body: dict[str, str] = {"input": text}
        if self.model:
            body["model"] = self.model
        try:
            response = await get_client().post(
                self.url, json=body, headers=self._headers, timeout=self.timeout
            )
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            return verdict_from(data=response.json())
        except (httpx.HTTPError, ValueError, TimeoutError) as exc:
            what = f"{type(exc).__name__}: {exc}" if isinstance(exc, ValueError) else type(exc).__name__
            log.warning(
                "moderation endpoint at %s failed (%s); %s",
                self.host,
                what,
                "the text is stopped (CHATSITE_MODERATION_FAIL=closed)"
                if self.fail_closed
                else "the text goes on unchecked (CHATSITE_MODERATION_FAIL=open)",
            )
            return UNAVAILABLE if self.fail_closed else None

    async def prompt_check(self, *, text: str) -> Verdict | None:
        return await self.check(text=text)
