"""HTTP views: the chat page, JSON reads, and first-run sign-up."""

from __future__ import annotations

import json
import uuid

from asgiref.sync import sync_to_async
from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model, login
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from conversations import errors, selectors, serializers
from conversations.catalog import model_list, provider_state_list
from conversations.exceptions import NotAuthenticated, NotFound, SignupClosed, UsernameTaken
from conversations.realtime import protocol
from conversations.realtime.commands import model_default
from conversations.services import accounts as account_services
from conversations.services import conversations as conversation_services
from conversations.views.errors import json_error, json_methods, json_refusal


async def _user_or_redirect(request: HttpRequest):
    user = await request.auser()
    if not user.is_authenticated:
        return None, redirect_to_login(request.get_full_path())
    return user, None


@require_GET
async def chat(request: HttpRequest, conversation_id: uuid.UUID | None = None) -> HttpResponse:
    user, redirect_response = await _user_or_redirect(request)
    if redirect_response is not None:
        return redirect_response
    conversation = None
    messages: list[dict] = []
    if conversation_id is not None:
        conversation = await sync_to_async(selectors.conversation_get)(
            user=user, conversation_id=conversation_id
        )
        if conversation is None:
            raise Http404("No such conversation")
        messages = [
            serializers.message_to_dict(m, staff=user.is_staff)
            for m in await sync_to_async(selectors.message_list)(conversation=conversation)
        ]
    # The sidebar's first page, exactly as GET /api/history/ answers it, so the page
    # need not ask again; groups are left to the browser, which knows its time zone.
    first_page = await sync_to_async(selectors.conversation_list)(user=user)
    history = {
        "conversations": [
            serializers.conversation_summary_dict(item.conversation) for item in first_page.items
        ],
        "next_cursor": first_page.next_cursor,
    }
    shared = await sync_to_async(selectors.shared_conversation_ids)(user=user)
    # The last good lists, at once: listing happens in the background (providers.catalog).
    listed = model_list()
    context = {
        "conversation": conversation,
        "page_data": {
            "conversation": serializers.conversation_to_dict(conversation) if conversation else None,
            "messages": messages,
            "history": history,
            "models": [m.as_dict() for m in listed],
            "default_model": model_default(models=listed),
            "model_providers": provider_state_list(),
            "ws_path": protocol.PATH,
            "limits": {
                "max_prompt_chars": settings.CHATSITE_MAX_PROMPT_CHARS,
                "attachments_per_message": settings.CHATSITE_ATTACHMENTS_PER_MESSAGE,
                "attachment_max_bytes": settings.CHATSITE_ATTACHMENT_MAX_BYTES,
            },
            "heartbeat_s": settings.CHATSITE_HEARTBEAT,
            "error_labels": errors.ERROR_LABELS,
            # Shared links: which conversations have one, and whether links open without a login.
            "shares": {
                "conversations": [str(pk) for pk in shared],
                "public": settings.CHATSITE_PUBLIC_SHARES,
            },
        },
    }
    return await sync_to_async(render)(request, "chat.html", context)


@json_methods("GET")
async def conversation_detail(request: HttpRequest, conversation_id: uuid.UUID) -> JsonResponse:
    user = await request.auser()
    if not user.is_authenticated:
        return json_refusal(NotAuthenticated())
    conversation = await sync_to_async(selectors.conversation_get)(user=user, conversation_id=conversation_id)
    if conversation is None:
        return json_refusal(NotFound("no such conversation"))
    messages = await sync_to_async(selectors.message_list)(conversation=conversation)
    return JsonResponse(
        {
            "conversation": serializers.conversation_to_dict(conversation),
            "messages": [serializers.message_to_dict(m, staff=user.is_staff) for m in messages],
        }
    )


@json_methods("GET")
async def conversation_usage(request: HttpRequest, conversation_id: uuid.UUID) -> JsonResponse:
    """The conversation's usage (its Usage dialog): replies, tokens, what the
    stopped ones used until their stop, and an estimated cost where the model
    has a price (``CHATSITE_MODEL_PRICES``)."""
    user = await request.auser()
    if not user.is_authenticated:
        return json_refusal(NotAuthenticated())
    usage = await sync_to_async(selectors.usage_conversation)(user=user, conversation_id=conversation_id)
    if usage is None:
        return json_refusal(NotFound("no such conversation"))
    return JsonResponse(
        serializers.conversation_usage_dict(conversation_id=str(conversation_id), usage=usage)
    )


@json_methods("POST")
async def conversation_branch(request: HttpRequest, conversation_id: uuid.UUID) -> JsonResponse:
    """Show another version of a message: ``{"message": id}`` picks the branch through it."""
    user = await request.auser()
    if not user.is_authenticated:
        return json_refusal(NotAuthenticated())
    try:
        message_id = uuid.UUID(str(json.loads(request.body or b"{}").get("message")))
    except (ValueError, AttributeError, TypeError):
        return json_error(code="invalid", message='send {"message": <message id>}', status=400)
    conversation = await sync_to_async(selectors.conversation_get)(user=user, conversation_id=conversation_id)
    if conversation is None:
        return json_refusal(NotFound("no such conversation"))
    try:
        conversation = await sync_to_async(conversation_services.conversation_select_branch)(
            user=user, message_id=message_id
        )
    except NotFound as exc:
        return json_refusal(exc)
    if conversation.pk != conversation_id:
        return json_refusal(NotFound("no such message"))
    messages = await sync_to_async(selectors.message_list)(conversation=conversation)
    return JsonResponse({"messages": [serializers.message_to_dict(m, staff=user.is_staff) for m in messages]})


@json_methods("GET")
async def model_index(request: HttpRequest) -> JsonResponse:
    user = await request.auser()
    if not user.is_authenticated:
        return json_refusal(NotAuthenticated())
    listed = model_list()
    return JsonResponse(
        {
            "models": [m.as_dict() for m in listed],
            "default": model_default(models=listed),
            "providers": provider_state_list(),
        }
    )


class SignupForm(UserCreationForm):
    email = forms.EmailField(required=False)

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")


def signup_open() -> bool:
    return settings.CHATSITE_ALLOW_SIGNUP or not get_user_model().objects.exists()


def signup(request: HttpRequest) -> HttpResponse:
    """Sign-up: open for the very first user (who becomes the admin), and for
    everyone only when CHATSITE_ALLOW_SIGNUP is on."""
    if not signup_open():
        return render(request, "registration/signup_closed.html", status=403)
    first = not get_user_model().objects.exists()
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = account_services.account_create(
                username=form.cleaned_data["username"],
                email=form.cleaned_data.get("email") or "",
                password=form.cleaned_data["password1"],
            )
        except SignupClosed:  # another sign-up made the first account meanwhile
            return render(request, "registration/signup_closed.html", status=403)
        except UsernameTaken:
            form.add_error("username", "A user with that username already exists.")
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("chat")
    return render(request, "registration/signup.html", {"form": form, "first": first})


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")
