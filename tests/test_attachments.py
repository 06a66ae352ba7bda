"""Attachments: the upload checked from its content, the limits, the file served
to its owner only, images to vision models only, and the purge."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from conversations import selectors, serializers
from conversations.models import Attachment, Conversation, Message
from conversations.services import attachments as attachment_services
from tests import factories, files
from tests.conftest import deltas_text


@pytest.fixture(autouse=True)
def attachments_dir(settings, tmp_path):
    settings.CHATSITE_ATTACHMENTS_DIR = tmp_path / "attachments"
    return settings.CHATSITE_ATTACHMENTS_DIR


def stored_files(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def chat_requests(fake, before: int) -> list:
    """The requests for a reply since ``before`` (the model listings left out)."""
    return [r for r in fake.requests[before:] if r.path != "/v1/models"]


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def upload(client: Client, name: str, data: bytes):
    return client.post("/api/attachments/", {"file": SimpleUploadedFile(name, data)})


@pytest.fixture
def alice_client(db):
    return client_for(factories.user("alice"))


# --- the upload: what a file is comes from its content --------------------------


def test_a_png_is_stored_re_encoded_and_served_to_its_owner_as_an_image(alice_client, attachments_dir):
    response = upload(alice_client, "chart.png", files.png(64, 48))

    assert response.status_code == 201
    data = response.json()["attachment"]
    assert {k: data[k] for k in ("kind", "name", "media_type", "width", "height")} == {
        "kind": "image",
        "name": "chart.png",
        "media_type": "image/png",
        "width": 64,
        "height": 48,
    }
    assert stored_files(attachments_dir) == [data["id"]]  # named by its id, not by the user's name
    served = alice_client.get(data["url"])
    assert served.status_code == 200
    assert served["Content-Type"] == "image/png"
    assert served["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in served["Content-Security-Policy"]
    assert "default-src 'none'" in served["Content-Security-Policy"]
    assert served["Content-Disposition"].startswith("inline")
    body = b"".join(served.streaming_content)
    from PIL import Image

    assert Image.open(io.BytesIO(body)).size == (64, 48)


def test_a_png_named_txt_is_an_image(alice_client):
    data = upload(alice_client, "notes.txt", files.png()).json()["attachment"]
    assert (data["kind"], data["media_type"]) == ("image", "image/png")


def test_an_html_file_named_png_is_text_and_is_never_served_as_html_or_an_image(alice_client):
    page = b"<html><body><script>alert(document.cookie)</script></body></html>"
    response = upload(alice_client, "cat.png", page)

    assert response.status_code == 201
    data = response.json()["attachment"]
    assert (data["kind"], data["media_type"]) == ("text", "text/plain")
    served = alice_client.get(data["url"])
    assert served["Content-Type"] == "text/plain; charset=utf-8"
    assert served["Content-Disposition"].startswith("attachment")
    assert served["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in served["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50, "bad_image"),
        ("broken.jpg", b"\xff\xd8\xff\xe0" + b"not a jpeg at all" * 20, "bad_image"),
        ("program.exe", b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff", "unsupported_type"),
        ("archive.zip", b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(256)), "unsupported_type"),
        ("latin1.txt", "caf\u00e9 cr\u00e8me".encode("latin-1"), "bad_text"),
        ("damaged.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> trailer nonsense", "bad_pdf"),
        ("empty.txt", b"", "no_file"),
    ],
)
def test_a_file_that_is_not_what_can_be_attached_is_refused_and_nothing_is_stored(
    alice_client, attachments_dir, name, data, code
):
    response = upload(alice_client, name, data)

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == code
    assert body["message"]  # words for people
    assert Attachment.objects.count() == 0
    assert [f for f in stored_files(attachments_dir) if not f.startswith(".")] == []
    assert [f for f in stored_files(attachments_dir) if f.startswith(".")] == []  # no temporary file left


def test_a_polyglot_image_loses_what_rides_after_its_pixels(alice_client, attachments_dir):
    payload = b"<script>alert(1)</script>PK\x03\x04hidden-archive"
    data = upload(alice_client, "poly.png", files.png() + payload).json()["attachment"]

    stored = (attachments_dir / data["id"]).read_bytes()
    assert b"<script>" not in stored and b"hidden-archive" not in stored
    assert stored.startswith(b"\x89PNG")


def test_a_decompression_bomb_is_refused_before_it_is_decoded(alice_client, settings):
    from PIL import Image

    out = io.BytesIO()
    Image.new("1", (20000, 20000)).save(out, "PNG")  # 400 megapixels in a small file
    bomb = out.getvalue()
    assert len(bomb) < 100_000

    response = upload(alice_client, "bomb.png", bomb)
    assert response.status_code == 400
    assert response.json()["error"] == "too_many_pixels"

    settings.CHATSITE_ATTACHMENT_MAX_PIXELS = 1000
    response = upload(alice_client, "wide.png", files.png(50, 30))
    assert response.json() == {
        "error": "too_many_pixels",
        "message": "the image is too large: 50 x 30 pixels; "
        "images of up to 0.001 million pixels can be attached",
    }
    assert Attachment.objects.count() == 0


def test_exif_and_gps_are_gone_after_the_re_encode(alice_client, attachments_dir):
    from PIL import Image

    original = files.jpeg_with_gps()
    assert b"SecretCamMaker" in original
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)  # GPS is there before

    data = upload(alice_client, "holiday.jpg", original).json()["attachment"]
    stored = (attachments_dir / data["id"]).read_bytes()
    assert b"SecretCamMaker" not in stored and b"Exif" not in stored
    image = Image.open(io.BytesIO(stored))
    assert image.format == "JPEG" and image.size == (40, 30)
    assert not image.getexif() and not image.getexif().get_ifd(0x8825)


def test_a_pdf_keeps_its_text_for_the_model(alice_client):
    data = upload(alice_client, "report.pdf", files.pdf("Revenue grew by nine percent")).json()["attachment"]

    assert (data["kind"], data["media_type"], data["pages"]) == ("pdf", "application/pdf", 1)
    attachment = Attachment.objects.get(pk=data["id"])
    assert attachment.text == "Revenue grew by nine percent"
    served = alice_client.get(data["url"])
    assert served["Content-Type"] == "application/pdf"
    assert served["Content-Disposition"].startswith("attachment")


def test_a_text_file_keeps_its_text_and_a_file_name_is_only_a_name(alice_client, attachments_dir):
    response = upload(alice_client, "../../etc/passwd.md", "# Title\r\n\r\nBody \u2713".encode())

    data = response.json()["attachment"]
    assert data["name"] == "passwd.md"
    assert Attachment.objects.get(pk=data["id"]).text == "# Title\n\nBody \u2713"
    assert stored_files(attachments_dir) == [data["id"]]


# --- limits --------------------------------------------------------------------


def test_a_file_over_the_size_limit_is_refused_with_413(alice_client, settings, attachments_dir):
    settings.CHATSITE_ATTACHMENT_MAX_BYTES = 1024 * 1024
    settings.CHATSITE_ATTACHMENT_MAX_TEXT_CHARS = 2 * 1024 * 1024
    response = upload(alice_client, "big.txt", b"a" * (1024 * 1024 + 1))

    assert response.status_code == 413
    assert response.json() == {
        "error": "too_large",
        "message": "the file is too large: files of up to 1 MB can be attached",
    }
    assert Attachment.objects.count() == 0 and stored_files(attachments_dir) == []
    assert upload(alice_client, "fits.txt", b"a" * (1024 * 1024)).status_code == 201


def test_a_text_over_the_character_limit_is_refused(alice_client, settings):
    settings.CHATSITE_ATTACHMENT_MAX_TEXT_CHARS = 100
    response = upload(alice_client, "long.txt", b"x" * 101)
    assert (response.status_code, response.json()["error"]) == (400, "too_large")


def test_uploads_waiting_to_be_sent_are_limited(alice_client, settings):
    settings.CHATSITE_ATTACHMENTS_PENDING_MAX = 2
    assert upload(alice_client, "a.txt", b"a").status_code == 201
    assert upload(alice_client, "b.txt", b"b").status_code == 201
    response = upload(alice_client, "c.txt", b"c")
    assert (response.status_code, response.json()["error"]) == (400, "too_many_pending")


def test_an_upload_without_a_file_or_a_session_is_refused(alice_client):
    response = alice_client.post("/api/attachments/", {})
    assert (response.status_code, response.json()["error"]) == (400, "no_file")
    anonymous = Client().post("/api/attachments/", {"file": SimpleUploadedFile("a.txt", b"a")})
    assert (anonymous.status_code, anonymous.json()["error"]) == (401, "not_authenticated")
    assert Client().get(f"/api/attachments/{uuid.uuid4()}/file").status_code == 401


def test_the_upload_is_csrf_protected(db):
    client = Client(enforce_csrf_checks=True)
    client.force_login(factories.user("carol"))
    response = client.post("/api/attachments/", {"file": SimpleUploadedFile("a.txt", b"a")})
    assert (response.status_code, response.json()["error"]) == (403, "csrf_failed")


# --- ownership -----------------------------------------------------------------


def test_another_users_attachment_answers_like_a_missing_one(db, attachments_dir):
    alice, bob = factories.user("alice"), factories.user("bob")
    theirs = upload(client_for(bob), "secret.txt", b"bob's secret").json()["attachment"]
    mine = client_for(alice)

    for path in ("/api/attachments/{}/file", "/api/attachments/{}/delete/"):
        call = mine.get if path.endswith("file") else mine.post
        foreign, missing = call(path.format(theirs["id"])), call(path.format(uuid.uuid4()))
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json() == {"error": "not_found", "message": "no such attachment"}
    assert Attachment.objects.filter(pk=theirs["id"]).exists()
    assert (attachments_dir / theirs["id"]).exists()


def test_an_unsent_upload_can_be_deleted_and_a_sent_one_cannot(db, attachments_dir):
    alice = factories.user("alice")
    client = client_for(alice)
    unsent = upload(client, "a.txt", b"a").json()["attachment"]
    response = client.post(f"/api/attachments/{unsent['id']}/delete/")
    assert response.json() == {"deleted": unsent["id"]}
    assert not Attachment.objects.filter(pk=unsent["id"]).exists()
    assert stored_files(attachments_dir) == []

    sent = upload(client, "b.txt", b"b").json()["attachment"]
    conversation = factories.conversation(alice)
    message = Message.objects.create(conversation=conversation, role="user", content="hi", client_id="x")
    message.attachments.add(sent["id"])
    response = client.post(f"/api/attachments/{sent['id']}/delete/")
    assert (response.status_code, response.json()["error"]) == (409, "attachment_in_use")
    assert (attachments_dir / sent["id"]).exists()


# --- sending --------------------------------------------------------------------


async def _upload(user, name: str, data: bytes) -> dict:
    def go():
        return upload(client_for(user), name, data).json()["attachment"]

    return await sync_to_async(go)()


async def _send(socket, *, text: str, model: str, attachments: list[str], conversation=None, **extra) -> str:
    client_id = uuid.uuid4().hex
    await socket.send(
        type="send",
        client_id=client_id,
        conversation=conversation,
        text=text,
        model=model,
        attachments=attachments,
        **extra,
    )
    return client_id


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_an_image_for_a_text_only_model_is_refused_before_any_upstream_call(connect, alice, upstream):
    image = await _upload(alice, "photo.png", files.png())
    socket = await connect(alice)
    before = len(upstream.requests)

    client_id = await _send(socket, text="What is this?", model="openai/fake", attachments=[image["id"]])
    error = await socket.recv()

    assert error == {
        "type": "error",
        "code": "model_cannot_see",
        "message": "fake cannot see images: pick a model that can (marked 'sees images' in the model "
        "picker), or remove the images",
        "ref": client_id,
    }
    assert await socket.nothing()
    assert chat_requests(upstream, before) == []
    assert await sync_to_async(Conversation.objects.count)() == 0
    assert await sync_to_async(Message.objects.count)() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_an_image_and_a_pdf_reach_a_vision_model_and_stay_on_the_message(
    connect, alice, upstream, settings
):
    settings.CHATSITE_VISION_MODELS = ["openai/fake-vis*"]
    image = await _upload(alice, "photo.png", files.png(10, 10))
    report = await _upload(alice, "report.pdf", files.pdf("Sales doubled"))
    socket = await connect(alice)
    before = len(upstream.requests)

    await _send(
        socket,
        text="Compare them",
        model="openai/fake-vision?tokens=3&rate=0",
        attachments=[image["id"], report["id"]],
    )
    frames = await socket.recv_until("reply_finished")
    assert frames[-1]["status"] == "complete", frames[-1]
    assert deltas_text(frames) == "w0 w1 w2 "

    (record,) = [r for r in upstream.requests[before:] if r.path == "/v1/chat/completions"]
    (user,) = record.body["messages"]
    text, picture = user["content"]
    assert text["type"] == "text"
    assert text["text"] == '<file name="report.pdf">\nSales doubled\n</file>\n\nCompare them'
    assert picture["type"] == "image_url" and picture["image_url"]["url"].startswith("data:image/png;base64,")
    stored = attachment_services.attachment_path(attachment_id=image["id"]).read_bytes()
    assert record.images == [("image/png", stored)]

    ack = next(f for f in frames if f["type"] == "ack")

    def shown():
        conversation = selectors.conversation_get(user=alice, conversation_id=uuid.UUID(ack["conversation"]))
        return [serializers.message_to_dict(m) for m in selectors.message_list(conversation=conversation)]

    messages = await sync_to_async(shown)()
    assert [a["name"] for a in messages[0]["attachments"]] == ["photo.png", "report.pdf"]
    assert messages[0]["attachments"][1]["text_chars"] == len("Sales doubled")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_another_users_attachment_in_a_send_answers_like_a_missing_one(connect, alice, bob, upstream):
    theirs = await _upload(bob, "secret.txt", b"bob's notes")
    socket = await connect(alice)
    before = len(upstream.requests)

    answers = []
    for attachment_id in (theirs["id"], str(uuid.uuid4())):
        client_id = await _send(socket, text="hi", model="openai/fake", attachments=[attachment_id])
        error = await socket.recv()
        answers.append({k: v for k, v in error.items() if k != "ref"})
        assert error["ref"] == client_id
    assert answers[0] == answers[1]
    assert answers[0]["code"] == "not_found"
    assert chat_requests(upstream, before) == []
    assert await sync_to_async(Message.objects.count)() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_too_many_attachments_on_one_message_are_refused(connect, alice, upstream, settings):
    settings.CHATSITE_ATTACHMENTS_PER_MESSAGE = 2
    ids = [(await _upload(alice, f"{i}.txt", b"x"))["id"] for i in range(3)]
    socket = await connect(alice)
    await _send(socket, text="hi", model="openai/fake", attachments=ids)
    error = await socket.recv()
    assert (error["code"], error["message"]) == (
        "too_many_attachments",
        "at most 2 files can be attached to one message; remove some",
    )
    await _send(socket, text="hi", model="openai/fake", attachments=["not-an-id"])
    assert (await socket.recv())["code"] == "invalid_field"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_a_message_of_files_alone_is_sent_and_titled_by_them(connect, alice, upstream):
    notes = await _upload(alice, "notes.md", b"# Plan\n\nShip it.")
    socket = await connect(alice)
    before = len(upstream.requests)
    await _send(socket, text="", model="openai/fake?tokens=2&rate=0", attachments=[notes["id"]])
    frames = await socket.recv_until("reply_finished")
    assert frames[-1]["status"] == "complete"
    (record,) = [r for r in upstream.requests[before:] if r.path == "/v1/chat/completions"]
    assert record.body["messages"] == [
        {"role": "user", "content": '<file name="notes.md">\n# Plan\n\nShip it.\n</file>'}
    ]
    conversation = await sync_to_async(Conversation.objects.get)()
    assert conversation.title == "notes.md"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_an_earlier_image_is_a_note_to_a_model_that_cannot_see_it(connect, alice, upstream, settings):
    settings.CHATSITE_VISION_MODELS = ["openai/fake-vision*"]
    image = await _upload(alice, "cat.png", files.png())
    socket = await connect(alice)
    await _send(socket, text="Look", model="openai/fake-vision?tokens=2&rate=0", attachments=[image["id"]])
    frames = await socket.recv_until("reply_finished")
    conversation = next(f for f in frames if f["type"] == "ack")["conversation"]
    before = len(upstream.requests)

    await socket.send(
        type="send",
        client_id=uuid.uuid4().hex,
        conversation=conversation,
        text="And now?",
        model="openai/fake?tokens=2&rate=0",
    )
    frames = await socket.recv_until("reply_finished")
    assert frames[-1]["status"] == "complete"
    (record,) = [r for r in upstream.requests[before:] if r.path == "/v1/chat/completions"]
    first = record.body["messages"][0]
    assert first == {
        "role": "user",
        "content": "[An image, cat.png, was attached; this model cannot see it.]\n\nLook",
    }
    assert record.images == []

    # Regenerating the reply to the image itself with that model is refused, before any call.
    reply = next(f for f in frames if f["type"] == "reply_started")["reply"]
    first_reply = await sync_to_async(
        lambda: str(Message.objects.filter(role="assistant").order_by("created_at").first().pk)
    )()
    assert first_reply != reply
    before = len(upstream.requests)
    await socket.send(type="regenerate", client_id=uuid.uuid4().hex, reply=first_reply, model="openai/fake")
    error = await socket.recv()
    assert error["code"] == "model_cannot_see"
    assert chat_requests(upstream, before) == []


# --- the model list says which models see images ----------------------------------


@pytest.mark.django_db(transaction=True)
async def test_the_model_list_marks_the_models_that_see_images(alice, upstream):
    from conversations.catalog import model_refresh

    await model_refresh()
    client = Client()
    await sync_to_async(client.force_login)(alice)
    data = (await sync_to_async(client.get)("/api/models/")).json()
    vision = {m["id"]: m["vision"] for m in data["models"]}
    assert vision["openai/fake-vision"] is True  # the listing says so
    assert vision["openai/fake"] is False


# --- purge ------------------------------------------------------------------------


def test_uploads_never_sent_are_purged_after_a_day(db, attachments_dir):
    alice = factories.user("alice")
    client = client_for(alice)
    old = upload(client, "old.txt", b"old").json()["attachment"]
    fresh = upload(client, "fresh.txt", b"fresh").json()["attachment"]
    sent = upload(client, "sent.txt", b"sent").json()["attachment"]
    message = Message.objects.create(
        conversation=factories.conversation(alice), role="user", content="hi", client_id="y"
    )
    message.attachments.add(sent["id"])
    Attachment.objects.filter(pk__in=[old["id"], sent["id"]]).update(
        created_at=timezone.now() - timedelta(days=2)
    )

    out = io.StringIO()
    call_command("purge_attachments", stdout=out)

    assert "Deleted 1" in out.getvalue()
    assert set(Attachment.objects.values_list("name", flat=True)) == {"fresh.txt", "sent.txt"}
    assert stored_files(attachments_dir) == sorted([fresh["id"], sent["id"]])


def test_the_json_of_a_message_lists_its_attachments(db):
    alice = factories.user("alice")
    data = upload(client_for(alice), "a.txt", b"hello").json()["attachment"]
    message = Message.objects.create(
        conversation=factories.conversation(alice), role="user", content="hi", client_id="z"
    )
    message.attachments.add(data["id"])
    shown = serializers.message_to_dict(Message.objects.get(pk=message.pk))
    assert shown["attachments"] == [data]
    assert json.loads(json.dumps(shown))["attachments"][0]["url"] == f"/api/attachments/{data['id']}/file"


def test_a_large_image_is_sent_to_models_as_a_smaller_copy(alice_client, attachments_dir):
    from PIL import Image

    big = files.png(3000, 1500)
    data = upload(alice_client, "wide.png", big).json()["attachment"]
    assert (data["width"], data["height"]) == (3000, 1500)  # shown as it is
    assert stored_files(attachments_dir) == sorted([data["id"], f"{data['id']}.model"])

    part = attachment_services.attachment_image(attachment=Attachment.objects.get(pk=data["id"]))
    assert part.media_type == "image/jpeg"
    assert Image.open(io.BytesIO(part.data)).size == (2048, 1024)

    small = upload(alice_client, "small.png", files.png()).json()["attachment"]
    part = attachment_services.attachment_image(attachment=Attachment.objects.get(pk=small["id"]))
    assert part.media_type == "image/png" and part.data == (attachments_dir / small["id"]).read_bytes()


def test_deleting_a_conversation_deletes_its_files_but_not_those_another_one_uses(db, attachments_dir):
    alice = factories.user("alice")
    client = client_for(alice)
    own = upload(client, "own.txt", b"only here").json()["attachment"]
    shared = upload(client, "shared.png", files.png(3000, 1500)).json()["attachment"]
    doomed, kept = factories.conversation(alice), factories.conversation(alice)
    message = factories.message(doomed, "hi", "user")
    message.attachments.add(own["id"], shared["id"])
    factories.message(kept, "again", "user").attachments.add(shared["id"])

    response = client.post(f"/api/conversations/{doomed.pk}/delete/")

    assert response.status_code == 200
    assert list(Attachment.objects.values_list("name", flat=True)) == ["shared.png"]
    assert stored_files(attachments_dir) == sorted([shared["id"], f"{shared['id']}.model"])
