"""Conversations and their messages."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    # "<provider>/<model>", e.g. "local/SmolLM2-135M-Instruct".
    model = models.CharField(max_length=200)
    # The client id of the message that created the conversation, so that a
    # retried "send to a new conversation" finds it instead of making another.
    client_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # False once the user renamed it: automatic titles never overwrite theirs.
    title_is_auto = models.BooleanField(default=True)
    # A model was asked for its title (once per conversation, whatever came of it;
    # see conversations/realtime/titles.py).
    title_generated = models.BooleanField(default=False)
    pinned = models.BooleanField(default=False)
    archived = models.BooleanField(default=False)
    system_prompt = models.TextField(blank=True)
    temperature = models.FloatField(null=True, blank=True)
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    # Extended thinking for this conversation's replies (tokens; 0: off; None:
    # the model's, CHATSITE_THINKING_BUDGET_MODELS / ANTHROPIC_THINKING_BUDGET).
    thinking_budget = models.PositiveIntegerField(null=True, blank=True)
    # The last message of the branch the user is looking at (messages form a tree).
    active_leaf = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["user", "-updated_at"], name="conv_user_recent"),
            models.Index(fields=["user", "archived", "-pinned", "-updated_at", "id"], name="conv_user_list"),
        ]
        constraints = [models.UniqueConstraint(fields=["user", "client_id"], name="conv_unique_client_id")]

    def __str__(self) -> str:
        return self.title or str(self.id)


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        STREAMING = "streaming"
        COMPLETE = "complete"
        STOPPED = "stopped"
        ERROR = "error"
        INTERRUPTED = "interrupted"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    # Messages form a tree: a regenerated reply or an edited message is a sibling
    # of the one it replaces; None for the first message.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    # User messages: the id the client chose, so a retried send is not stored twice.
    client_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # Assistant replies only.
    status = models.CharField(max_length=16, choices=Status.choices, blank=True)
    error_kind = models.CharField(max_length=32, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    last_seq = models.PositiveIntegerField(default=0)
    provider = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=200, blank=True)
    finish_reason = models.CharField(max_length=64, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    total_ms = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    usage_counted = models.BooleanField(
        default=False, help_text="Token counts were estimated here, not reported by the provider."
    )
    # Earlier messages of the branch that were not sent (over the model's
    # window), and the window the prompt was fitted to.
    omitted_messages = models.PositiveIntegerField(default=0)
    context_tokens = models.PositiveIntegerField(null=True, blank=True)
    # The process that runs a streaming reply, so a sweep can tell replies of a
    # dead process from those of a live one.
    worker = models.CharField(max_length=64, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A reply continued after it stopped: the metrics of each earlier part.
    segments = models.JSONField(default=list, blank=True)
    # The model's reasoning, kept apart from its answer (content); never sent
    # back to the model. Redacted: the provider hid (some of) it. The signature
    # is Anthropic's, of its thinking block.
    reasoning = models.TextField(blank=True)
    reasoning_ms = models.FloatField(null=True, blank=True)
    first_answer_ms = models.FloatField(null=True, blank=True)
    reasoning_redacted = models.BooleanField(default=False)
    reasoning_signature = models.TextField(blank=True)
    # The moderation rule that stopped the reply (error kind "moderation"), for
    # staff: never in what a user who is not staff sees.
    moderation_rule = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="msg_conv_time"),
            models.Index(fields=["status"], name="msg_status"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=~models.Q(client_id=""),
                name="msg_unique_client_id",
            )
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"

    @property
    def is_terminal(self) -> bool:
        return self.role == self.Role.ASSISTANT and self.status != self.Status.STREAMING


class Worker(models.Model):
    """A server process that runs replies: where to reach it, and whether it lives.

    Other processes route a stop or a subscribe for one of its replies to
    ``channel`` (a channel-layer channel); a process whose heartbeat is stale is
    dead, and its streaming replies are swept to ``interrupted``.
    """

    id = models.CharField(primary_key=True, max_length=64)
    channel = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.id


class Attachment(models.Model):
    """A file the user attached: an image (re-encoded), a text file, or a PDF (its text taken out).

    The bytes live under ``CHATSITE_ATTACHMENTS_DIR``, in a file named by the id;
    ``name`` is the user's file name, for showing only. An upload belongs to no
    message until a ``send`` binds it; one attachment can be on several user
    messages of one conversation (an edited message keeps its files).
    """

    class Kind(models.TextChoices):
        IMAGE = "image"
        TEXT = "text"
        PDF = "pdf"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="attachments")
    messages = models.ManyToManyField(Message, related_name="attachments", blank=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    # Checked from the content, never taken from the name or the browser.
    media_type = models.CharField(max_length=64)
    name = models.CharField(max_length=255)
    size = models.PositiveIntegerField()
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    # Text files and PDFs: the text the model is sent.
    text = models.TextField(blank=True)
    pages = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["user", "created_at"], name="attachment_user_time")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.name}"


class Share(models.Model):
    """A read-only snapshot of a conversation's shown branch, at an unguessable link.

    The link's token is random (``secrets.token_urlsafe``); it is looked up by
    its SHA-256 (``token_hash``), so finding a share takes no comparison of the
    secret itself. The token is kept too, for the owner to copy the link again.
    ``snapshot`` is frozen when the share is made (title, model, the branch's
    messages as ``serializers.message_to_dict`` renders them): nothing the owner
    does to the conversation afterwards changes it. Revoking deletes the row;
    deleting the conversation or the account deletes its shares with it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="shares")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="shares")
    token = models.CharField(max_length=64)
    token_hash = models.CharField(max_length=64, unique=True)
    title = models.CharField(max_length=200, blank=True)
    snapshot = models.JSONField()
    show_owner_name = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="share_owner_recent")]

    def __str__(self) -> str:
        return self.title or str(self.id)
