"""``GET /metrics``: Prometheus' scrape of this process (conversations/metrics.py).

Read with ``Authorization: Bearer <CHATSITE_METRICS_TOKEN>`` (compared in
constant time) or by a logged-in staff user. Anyone else, and everyone when
``CHATSITE_METRICS`` is off, gets the site's plain 404: the endpoint is not
revealed.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from conversations import metrics


def _token_ok(request: HttpRequest) -> bool:
    expected = settings.CHATSITE_METRICS_TOKEN
    if not expected:
        return False
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


@require_GET
async def metrics_scrape(request: HttpRequest) -> HttpResponse:
    if not metrics.metrics_on():
        raise Http404("No such page")
    if not _token_ok(request):
        user = await request.auser()
        if not (user.is_authenticated and user.is_staff):
            raise Http404("No such page")
    return HttpResponse(metrics.metrics_text(), content_type=CONTENT_TYPE_LATEST)
