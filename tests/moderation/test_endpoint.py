"""The endpoint backend against the fake upstream's ``POST /v1/moderations``:
flagged, not flagged, and down (fail open, fail closed)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from conversations.moderation.base import Verdict
from conversations.moderation.endpoint import EndpointModerator, endpoint_url, verdict_from
from conversations.providers.http import close_client


@pytest.fixture
def flagging(fake):
    fake.flag_words = {"badword": "hate/threatening"}
    yield fake
    fake.flag_words = {}
    fake.moderation_status = 200
    fake.moderation_delay = 0.0


def check(moderator: EndpointModerator, text: str) -> Verdict | None:
    async def once() -> Verdict | None:
        try:
            return await moderator.check(text=text)
        finally:
            await close_client()

    return asyncio.run(once())


def test_a_flagged_text_is_named_by_its_first_category(flagging):
    moderator = EndpointModerator(url=flagging.openai_base_url, api_key="sk-mod-not-secret", model="m1")
    assert check(moderator, "so BADWORD") == Verdict("endpoint:hate/threatening")
    record = flagging.requests[-1]
    assert record.body == {"input": "so BADWORD", "model": "m1"}
    assert record.headers["authorization"] == "Bearer sk-mod-not-secret"


def test_a_clear_text_is_clear(flagging):
    assert check(EndpointModerator(url=flagging.openai_base_url), "kind words") is None
    assert flagging.requests[-1].body == {"input": "kind words"}  # no model: the endpoint's default


@pytest.mark.parametrize("status", [500, 401])
def test_an_endpoint_that_fails_lets_text_through_unless_it_fails_closed(flagging, caplog, status):
    flagging.moderation_status = status
    caplog.set_level(logging.WARNING)
    assert check(EndpointModerator(url=flagging.openai_base_url, api_key="sk-mod-not-secret"), "x") is None
    assert f"HTTP {status}" in caplog.text and "sk-mod" not in caplog.text
    closed = EndpointModerator(url=flagging.openai_base_url, fail_closed=True)
    assert check(closed, "x") == Verdict("endpoint:unavailable", cause="unavailable")


def test_an_endpoint_that_cannot_be_reached_or_is_too_slow_fails_the_same_way(flagging):
    assert check(EndpointModerator(url="http://127.0.0.1:9/v1", fail_closed=True), "x") is not None
    flagging.moderation_delay = 0.5
    slow = EndpointModerator(url=flagging.openai_base_url, timeout=0.05, fail_closed=True)
    assert check(slow, "x") == Verdict("endpoint:unavailable", cause="unavailable")


def test_the_url_is_a_base_url_or_the_endpoint_itself():
    assert endpoint_url(base="http://h/v1/") == "http://h/v1/moderations"
    assert endpoint_url(base="http://h/v1/moderations") == "http://h/v1/moderations"


def test_an_answer_of_another_shape_is_refused():
    for data in ({}, {"results": []}, {"results": [{"categories": {}}]}, []):
        with pytest.raises(ValueError):
            verdict_from(data=data)
    flagged = {"results": [{"flagged": True, "categories": {}}]}
    assert verdict_from(data=flagged) == Verdict("endpoint:flagged")
