"""One list of refusals, one mapping to (code, words): the socket's error frame
and the HTTP envelope say the same thing for the same refusal."""

from __future__ import annotations

import json

import pytest

from conversations import exceptions
from conversations.exceptions import (
    ImportRejected,
    InvalidCursor,
    InvalidTitle,
    NotAuthenticated,
    NotContinuable,
    NotFound,
    QueryTooLong,
    Refusal,
    ReplyRunning,
    SignupClosed,
    TooManyMessages,
    TooManyReplies,
    UsernameTaken,
    refusal_answer,
)
from conversations.realtime import protocol
from conversations.views.errors import json_refusal, refusal_status


def test_the_socket_refusals_keep_their_documented_codes_and_words():
    # docs/protocol.md, "error": these are what a client sees today.
    assert refusal_answer(NotFound("no such reply")) == ("not_found", "no such reply")
    assert refusal_answer(ReplyRunning()) == (
        "reply_running",
        "this conversation already has a reply streaming; stop it first",
    )
    assert refusal_answer(TooManyMessages(per_minute=5)) == (
        "too_many_messages",
        "at most 5 messages a minute; wait a little",
    )
    assert refusal_answer(TooManyReplies(concurrent=2)) == (
        "too_many_replies",
        "at most 2 replies can stream at once; stop one or wait for it to finish",
    )
    assert refusal_answer(NotContinuable(has_text=True)) == (
        "not_continuable",
        "only a stopped, interrupted or cut reply can be continued",
    )
    assert refusal_answer(NotContinuable(has_text=False)) == (
        "not_continuable",
        "this reply has no text to continue from; press Regenerate to try again",
    )


SOCKET_REFUSALS = [
    NotFound("no such conversation"),
    ReplyRunning(),
    TooManyMessages(per_minute=1),
    TooManyReplies(concurrent=1),
    NotContinuable(),
]


@pytest.mark.parametrize("refusal", SOCKET_REFUSALS, ids=lambda r: type(r).__name__)
def test_a_socket_refusal_over_http_has_the_error_frames_code_and_words(refusal):
    code, words = refusal_answer(refusal)
    assert code in protocol.ERROR_CODES  # the error frame accepts it
    response = json_refusal(refusal)
    assert json.loads(response.content) == {"error": code, "message": words}


@pytest.mark.parametrize(
    ("refusal", "status"),
    [
        (NotAuthenticated(), 401),
        (SignupClosed(), 403),
        (NotFound(), 404),
        (ReplyRunning(), 409),
        (TooManyMessages(per_minute=1), 429),
        (TooManyReplies(concurrent=1), 429),
        (InvalidTitle("the title is empty"), 400),
        (InvalidCursor(), 400),
        (QueryTooLong("the query has more than 32 words"), 400),
        (ImportRejected("The file is empty.", "empty"), 400),
        (UsernameTaken(), 400),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Refusal) else str(v),
)
def test_each_refusal_has_one_http_status(refusal, status):
    assert refusal_status(refusal) == status


def test_every_refusal_has_its_own_code_and_words_for_people():
    kinds = [
        value
        for value in vars(exceptions).values()
        if isinstance(value, type) and issubclass(value, Refusal) and value is not Refusal
    ]
    codes = {kind.code for kind in kinds if kind not in (exceptions.Invalid, ImportRejected)}
    assert len(codes) == len(kinds) - 2  # no two refusals share a code
    assert all(kind.__doc__ for kind in kinds)


def test_an_import_refusal_keeps_the_code_it_was_given():
    refusal = ImportRejected("The file's JSON is nested too deeply.", "too_deep")
    assert refusal_answer(refusal) == ("too_deep", "The file's JSON is nested too deeply.")
    assert refusal_answer(ImportRejected("x: must be a list.")) == ("invalid", "x: must be a list.")
