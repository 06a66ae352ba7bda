"""Every JSON endpoint answers its errors in one envelope, {"error": code, "message": words},
with the codes and statuses docs/protocol.md ("Errors over HTTP") lists."""

from __future__ import annotations

import json
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db(transaction=True)

#: (method, path) of every JSON endpoint; {id} is a conversation of the asking user.
ENDPOINTS = [
    ("GET", "/api/models/"),
    ("GET", "/api/history/"),
    ("GET", "/api/conversations/"),
    ("GET", "/api/conversations/{id}/"),
    ("POST", "/api/conversations/{id}/branch/"),
    ("POST", "/api/conversations/{id}/update/"),
    ("POST", "/api/conversations/{id}/delete/"),
    ("GET", "/api/search/"),
    ("POST", "/import/"),
    ("GET", "/api/shares/"),
    ("POST", "/api/conversations/{id}/share/"),
]
POSTS = [e for e in ENDPOINTS if e[0] == "POST"]


def envelope(response, status: int, code: str) -> str:
    """Check the envelope; return its message."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "message"}, body
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"].strip(), body
    return body["message"]


def logged_in(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def conversation_of(user) -> Conversation:
    conversation = Conversation.objects.create(user=user, title="mine", model="openai/fake", client_id="c")
    message = Message.objects.create(conversation=conversation, role="user", content="hi")
    Conversation.objects.filter(pk=conversation.pk).update(active_leaf=message)
    conversation.refresh_from_db()
    return conversation


def call(client: Client, method: str, path: str, body=None):
    if method == "GET":
        return client.get(path)
    return client.post(path, data=json.dumps(body or {}), content_type="application/json")


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_without_a_session_every_endpoint_answers_401_not_authenticated(alice, method, path):
    path = path.format(id=conversation_of(alice).pk)
    envelope(call(Client(), method, path), 401, "not_authenticated")


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_a_wrong_method_is_405_method_not_allowed_naming_the_right_one(alice, method, path):
    path = path.format(id=conversation_of(alice).pk)
    client = logged_in(alice)
    response = client.post(path) if method == "GET" else client.get(path)
    message = envelope(response, 405, "method_not_allowed")
    assert response["Allow"] == method and method in message


@pytest.mark.parametrize(("method", "path"), POSTS)
def test_a_post_without_a_csrf_token_is_403_csrf_failed(alice, method, path):
    conversation = conversation_of(alice)
    client = logged_in(alice, enforce_csrf_checks=True)
    message = envelope(call(client, method, path.format(id=conversation.pk)), 403, "csrf_failed")
    assert "CSRF" in message and "reload the page" in message
    assert Conversation.objects.filter(pk=conversation.pk).exists()  # the delete did not happen


def test_a_form_page_still_gets_djangos_csrf_page(transactional_db):
    response = Client(enforce_csrf_checks=True).post("/accounts/signup/", {"username": "x"})
    assert response.status_code == 403
    assert not response["Content-Type"].startswith("application/json")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/conversations/{id}/", None),
        ("POST", "/api/conversations/{id}/branch/", {"message": str(uuid.uuid4())}),
        ("POST", "/api/conversations/{id}/update/", {"pinned": True}),
        ("POST", "/api/conversations/{id}/delete/", None),
    ],
)
def test_another_users_conversation_is_404_not_found_like_a_missing_one(alice, bob, method, path, body):
    theirs = conversation_of(bob)
    if "branch" in path:
        body = {"message": str(theirs.active_leaf_id)}
    client = logged_in(alice)
    foreign = call(client, method, path.format(id=theirs.pk), body)
    missing = call(client, method, path.format(id=uuid.uuid4()), body)
    envelope(foreign, 404, "not_found")
    assert foreign.json() == missing.json()
    theirs.refresh_from_db()
    assert not theirs.pinned and Conversation.objects.filter(pk=theirs.pk).exists()


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "words"),
    [
        ("GET", "/api/history/?archived=maybe", None, "invalid", "archived must be 0 or 1"),
        ("GET", "/api/history/?limit=0", None, "invalid", "limit must be between 1 and 200"),
        ("GET", "/api/history/?cursor=bm90LWEtY3Vyc29y", None, "invalid_cursor", "start from the first page"),
        ("GET", "/api/search/?q=x&offset=-1", None, "invalid", "offset must be between"),
        ("GET", "/api/search/?q=" + "x" * 300, None, "query_too_long", "longer than 256 characters"),
        (
            "POST",
            "/api/conversations/{id}/branch/",
            {"message": "nope"},
            "invalid",
            '{"message": <message id>}',
        ),
        ("POST", "/api/conversations/{id}/update/", {}, "invalid", "nothing to change"),
        ("POST", "/api/conversations/{id}/update/", {"colour": 1}, "invalid", "unknown field 'colour'"),
        ("POST", "/api/conversations/{id}/update/", {"title": "  "}, "invalid_title", "the title is empty"),
    ],
)
def test_a_bad_request_is_400_with_its_code_and_words(alice, method, path, body, code, words):
    path = path.format(id=conversation_of(alice).pk)
    assert words in envelope(call(logged_in(alice), method, path, body), 400, code)


def test_a_bad_import_is_400_with_the_code_in_error_and_the_words_in_message(alice):
    client = logged_in(alice)
    assert "Choose a file" in envelope(client.post("/import/", {}), 400, "no_file")
    upload = client.post("/import/", {"file": _file(b"not json at all")})
    assert "not valid JSON" in envelope(upload, 400, "not_json")


def _file(data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile("conversations.json", data, content_type="application/json")
