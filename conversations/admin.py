"""The admin's usage page: every user's replies and tokens per model, over a
date range, with an estimated cost (``CHATSITE_MODEL_PRICES``).

It is a view of the admin site (staff only, through ``admin_view``), linked
from the admin's index; there is no model behind it, the page reads
``selectors.usage_by_user_model``.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path
from django.utils import timezone

from conversations import selectors
from conversations.models import Message
from conversations.selectors import UsageTotals

#: The status columns of the page, in order.
STATUSES = [
    str(s)
    for s in (
        Message.Status.COMPLETE,
        Message.Status.STOPPED,
        Message.Status.ERROR,
        Message.Status.INTERRUPTED,
    )
]


def _day(raw: str | None, name: str, problems: list[str]) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        problems.append(f"{name} must be a date such as 2025-03-01, not {raw!r}; it was left out")
        return None


def usage_view(request: HttpRequest) -> HttpResponse:
    """Totals per user and model for the chosen days (``since``/``until``, UTC, both included)."""
    problems: list[str] = []
    since = _day(request.GET.get("since"), "From", problems)
    until = _day(request.GET.get("until"), "To", problems)
    rows = selectors.usage_by_user_model(since=since, until=until)
    total = UsageTotals()
    for row in rows:
        total.add(row)
    today = timezone.now().date()
    context = {
        **admin.site.each_context(request),
        "title": "Usage per user and model",
        "rows": [_row(r) for r in rows],
        "total": _row(total),
        "statuses": STATUSES,
        "since": since.isoformat() if since else "",
        "until": until.isoformat() if until else "",
        "problems": problems,
        "ranges": [
            ("Today", today, today),
            ("Last 7 days", today - timedelta(days=6), today),
            ("Last 30 days", today - timedelta(days=29), today),
            ("All time", None, None),
        ],
        "unpriced": sorted(total.unpriced_models),
    }
    return TemplateResponse(request, "admin/usage.html", context)


def _row(totals: UsageTotals) -> dict:
    def money(amount: Decimal | None) -> str:
        return "—" if amount is None else format(amount, "f")

    return {
        "username": totals.username,
        "model": totals.model,
        "replies": totals.replies,
        "by_status": [totals.by_status.get(s, 0) for s in STATUSES],
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "counted_replies": totals.counted_replies,
        "stopped_completion_tokens": totals.stopped_completion_tokens,
        "cost": money(totals.cost),
        "stopped_cost": money(totals.stopped_cost),
    }


_admin_urls = admin.site.get_urls


def _urls() -> list[URLResolver | URLPattern]:
    return [path("usage/", admin.site.admin_view(usage_view), name="usage"), *_admin_urls()]


admin.site.get_urls = _urls  # type: ignore[method-assign]
