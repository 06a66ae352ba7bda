"""Every refusal of the app, in one list: what was refused, as a machine code and as words.

A :class:`Refusal` carries a ``code`` (stable, for machines: the socket's
``error`` frame and the HTTP error envelope both send it as it is) and a
``message`` (what happened and what to do, for a person). Services, selectors,
search and the importer raise these; the socket (``realtime/commands.py``) and
the HTTP views (``views/errors.py``) turn them into their answer with
:func:`refusal_answer`, so one refusal reads the same over both.

No Django here: a limit a message names is handed in by whoever raises it.
"""

from __future__ import annotations


class Refusal(Exception):
    """A request the app refuses; ``code`` for machines, ``message`` for people."""

    code = "invalid"
    default_message = "the request is not valid"

    def __init__(self, message: str | None = None) -> None:
        self.message = message if message is not None else self.default_message
        super().__init__(self.message)


class Invalid(Refusal):
    """A request of the wrong shape: a field missing, of the wrong type or out of range."""

    code = "invalid"


class NotAuthenticated(Refusal):
    """No logged-in session."""

    code = "not_authenticated"
    default_message = "log in first"


class NotFound(Refusal):
    """A missing id, or one that belongs to another user (indistinguishable)."""

    code = "not_found"
    default_message = "not found"


class ReplyRunning(Refusal):
    """The conversation already has a reply streaming."""

    code = "reply_running"
    default_message = "this conversation already has a reply streaming; stop it first"


class TooManyMessages(Refusal):
    """The user sent ``per_minute`` messages in the last minute already."""

    code = "too_many_messages"

    def __init__(self, *, per_minute: int) -> None:
        super().__init__(f"at most {per_minute} messages a minute; wait a little")
        self.per_minute = per_minute


class TooManyReplies(Refusal):
    """``concurrent`` replies of the user are streaming already."""

    code = "too_many_replies"

    def __init__(self, *, concurrent: int) -> None:
        super().__init__(
            f"at most {concurrent} replies can stream at once; stop one or wait for it to finish"
        )
        self.concurrent = concurrent


class NotContinuable(Refusal):
    """Only a stopped, interrupted or errored reply with text can be continued."""

    code = "not_continuable"

    def __init__(self, *, has_text: bool = True) -> None:
        super().__init__(
            "only a stopped, interrupted or cut reply can be continued"
            if has_text
            else "this reply has no text to continue from; press Regenerate to try again"
        )
        self.has_text = has_text


class InvalidTitle(Refusal):
    """A title that is empty once trimmed, or too long."""

    code = "invalid_title"
    default_message = "the title is not valid: write 1 to 200 characters"


class InvalidCursor(Refusal):
    """A cursor of the conversation list that this server did not make (or a corrupted one)."""

    code = "invalid_cursor"
    default_message = "the cursor is not valid; start from the first page"


class QueryTooLong(Refusal):
    """A search query over the length or word limit."""

    code = "query_too_long"
    default_message = "the query is too long; search for fewer words"


class SignupClosed(Refusal):
    """An account exists, and CHATSITE_ALLOW_SIGNUP is off."""

    code = "signup_closed"
    default_message = "sign-up is closed on this server; ask its administrator for an account"


class UsernameTaken(Refusal):
    """Another sign-up took the name first."""

    code = "username_taken"
    default_message = "a user with that username already exists; pick another name"


class TooManyShares(Refusal):
    """The conversation has ``limit`` shared links already."""

    code = "too_many_shares"

    def __init__(self, *, limit: int) -> None:
        super().__init__(
            f"this conversation has {limit} shared links already; revoke one before making another"
        )
        self.limit = limit


class ImportRejected(Refusal):
    """A file that cannot be imported; the message says why and where, for the user.

    ``code`` is one of ``invalid``, ``unknown_format``, ``version``, ``empty``,
    ``not_json``, ``too_deep``, ``too_many``, ``too_large``, ``no_file``,
    ``bad_upload`` (``docs/export-format.md``)."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


class AttachmentRejected(Refusal):
    """An upload that is not accepted; the message says why, for the user.

    ``code`` is one of ``no_file``, ``unsupported_type``, ``bad_image``,
    ``too_many_pixels``, ``bad_text``, ``bad_pdf``, ``too_many_pending``
    (``docs/protocol.md``, "Attachments")."""

    code = "unsupported_type"

    def __init__(self, message: str, code: str = "unsupported_type") -> None:
        super().__init__(message)
        self.code = code


class AttachmentTooLarge(AttachmentRejected):
    """A file over CHATSITE_ATTACHMENT_MAX_BYTES."""

    code = "too_large"

    def __init__(self, *, max_bytes: int) -> None:
        super().__init__(
            f"the file is too large: files of up to {max_bytes / (1024 * 1024):.0f} MB can be attached",
            "too_large",
        )
        self.max_bytes = max_bytes


class TooManyAttachments(Refusal):
    """More files on one message than CHATSITE_ATTACHMENTS_PER_MESSAGE."""

    code = "too_many_attachments"

    def __init__(self, *, limit: int) -> None:
        super().__init__(f"at most {limit} files can be attached to one message; remove some")
        self.limit = limit


class AttachmentInUse(Refusal):
    """An attachment that is on a message already (deleting it would change the history)."""

    code = "attachment_in_use"
    default_message = "this file is part of a sent message; delete the conversation to delete it"


class ModelCannotSee(Refusal):
    """Images sent to a model that does not take them (refused before any upstream call)."""

    code = "model_cannot_see"

    def __init__(self, *, model: str) -> None:
        super().__init__(
            f"{model[:80]} cannot see images: pick a model that can (marked 'sees images' in the "
            "model picker), or remove the images"
        )
        self.model = model


class Overloaded(Exception):
    """Work shed or refused for want of capacity (``realtime/capacity.py``):
    ``waiting`` others were waiting for the model. A reply ends with it as
    ``error`` of kind ``overloaded`` (``errors.py`` has its words)."""

    def __init__(self, *, waiting: int) -> None:
        super().__init__(f"the model is busy ({waiting} waiting)")
        self.waiting = waiting


class PromptModerated(Refusal):
    """A message that matches a moderation rule: refused before anything is stored
    or sent upstream (``cause`` "unavailable": the endpoint failed, and fails closed)."""

    code = "prompt_moderated"
    default_message = "This message was not sent: it matches a rule set by the operator of this server."

    def __init__(self, *, cause: str = "") -> None:
        super().__init__(
            "This message was not sent: the content check of this server is not answering. "
            "Try again in a moment."
            if cause == "unavailable"
            else None
        )
        self.cause = cause


def refusal_answer(exc: Refusal) -> tuple[str, str]:
    """The (code, words) a client is answered with for ``exc``, over the socket and HTTP alike."""
    return exc.code, exc.message
