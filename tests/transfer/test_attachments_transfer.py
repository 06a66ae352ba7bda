"""Attachments through export and import: a zip with the files beside the JSON, and back."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from conversations.exceptions import ImportRejected
from conversations.models import Attachment, Conversation, Message
from conversations.services import attachments as attachment_services
from conversations.transfer import exporting, importing
from tests import factories, files

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def attachments_dir(settings, tmp_path):
    settings.CHATSITE_ATTACHMENTS_DIR = tmp_path / "attachments"
    return settings.CHATSITE_ATTACHMENTS_DIR


def conversation_with_files(owner):
    """A conversation whose first message has an image, a PDF and a text file, and an
    edited version of it that keeps the image."""
    image = attachment_services.attachment_create(user=owner, name="chart.png", data=files.png(16, 12))
    report = attachment_services.attachment_create(
        user=owner, name="report.pdf", data=files.pdf("Up ten percent")
    )
    notes = attachment_services.attachment_create(user=owner, name="notes.md", data=b"# Notes\n\nShip it.")
    conversation = factories.conversation(owner, "With files")
    first = factories.message(conversation, "Look at these", "user")
    first.attachments.add(image, report, notes)
    reply = factories.message(conversation, "Nice chart.", "assistant", parent=first, status="complete")
    edited = factories.message(conversation, "Only the chart", "user", parent=None)
    edited.attachments.add(image)
    conversation.active_leaf = reply
    conversation.save()
    return conversation, {"image": image, "report": report, "notes": notes}


def zip_of(conversation) -> bytes:
    out = io.BytesIO()
    exporting.conversation_export_zip(conversation=conversation, out=out)
    return out.getvalue()


def test_the_zip_holds_the_json_and_each_file_once(db):
    alice = factories.user("alice")
    conversation, made = conversation_with_files(alice)

    archive = zipfile.ZipFile(io.BytesIO(zip_of(conversation)))
    names = sorted(archive.namelist())
    assert names == sorted(
        [
            "conversations.json",
            f"attachments/{made['image'].pk}.png",
            f"attachments/{made['report'].pk}.pdf",
            f"attachments/{made['notes'].pk}.txt",
        ]
    )
    document = json.loads(archive.read("conversations.json"))
    (exported,) = document["conversations"]
    users = [m for m in exported["messages"] if m["role"] == "user"]
    first = next(m for m in users if m["content"] == "Look at these")
    assert [a["name"] for a in first["attachments"]] == ["chart.png", "report.pdf", "notes.md"]
    assert first["attachments"][0]["file"] == f"attachments/{made['image'].pk}.png"
    assert "text" not in first["attachments"][0]  # an image's bytes are its file
    assert first["attachments"][1]["text"] == "Up ten percent"
    for attachment in made.values():
        stored = attachment_services.attachment_path(attachment_id=attachment.pk).read_bytes()
        assert archive.read(exporting.attachment_file_name(attachment)) == stored
    assert all("attachments" not in m for m in exported["messages"] if m["role"] == "assistant")


def test_a_zip_export_imports_back_with_new_ids_and_the_same_bytes(db):
    alice, bob = factories.user("alice"), factories.user("bob")
    conversation, made = conversation_with_files(alice)
    data = zip_of(conversation)

    result = importing.conversations_import(user=bob, data=data)

    (copy,) = result.conversations
    theirs = Attachment.objects.filter(user=bob)
    assert theirs.count() == 3  # the image on two versions is one attachment
    assert not set(theirs.values_list("pk", flat=True)) & {a.pk for a in made.values()}
    first = Message.objects.get(conversation=copy, content="Look at these")
    edited = Message.objects.get(conversation=copy, content="Only the chart")
    assert [a.name for a in first.attachments.order_by("created_at")] == [
        "chart.png",
        "report.pdf",
        "notes.md",
    ]
    (image,) = edited.attachments.all()
    assert image.kind == "image" and (image.width, image.height) == (16, 12)
    assert image in first.attachments.all()
    original = attachment_services.attachment_path(attachment_id=made["image"].pk).read_bytes()
    assert attachment_services.attachment_path(attachment_id=image.pk).read_bytes() == original
    report = first.attachments.get(kind="pdf")
    assert report.text == "Up ten percent"


def test_the_import_view_takes_a_zip(db, client):
    alice = factories.user("alice")
    conversation, _ = conversation_with_files(alice)
    data = zip_of(conversation)
    client.force_login(alice)
    response = client.post("/import/", {"file": SimpleUploadedFile("export.zip", data)})
    assert response.status_code == 200, response.content
    assert response.json()["imported"] == 1
    assert Attachment.objects.filter(user=alice).count() == 6


def test_the_zip_download_is_the_owners_only(db, client):
    alice, bob = factories.user("alice"), factories.user("bob")
    conversation, _ = conversation_with_files(alice)
    client.force_login(alice)
    response = client.get(f"/c/{conversation.pk}/export.zip")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert "conversations.json" in archive.namelist()
    everything = client.get("/export/all.zip")
    assert len(zipfile.ZipFile(io.BytesIO(b"".join(everything.streaming_content))).namelist()) == 4
    client.force_login(bob)
    assert client.get(f"/c/{conversation.pk}/export.zip").status_code == 404


def test_a_json_only_export_keeps_the_text_of_files_and_leaves_images_out(db):
    alice, bob = factories.user("alice"), factories.user("bob")
    conversation, _ = conversation_with_files(alice)
    data = exporting.conversation_export_json(conversation=conversation).encode()

    (copy,) = importing.conversations_import(user=bob, data=data).conversations

    first = Message.objects.get(conversation=copy, content="Look at these")
    kept = {a.name: (a.kind, a.text) for a in first.attachments.all()}
    assert kept == {"report.pdf": ("text", "Up ten percent"), "notes.md": ("text", "# Notes\n\nShip it.")}


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def _document(attachment: dict) -> bytes:
    return json.dumps(
        {
            "format": "chatsite",
            "version": 1,
            "conversations": [
                {
                    "title": "t",
                    "created_at": "2026-01-01T00:00:00+00:00",
                    "messages": [
                        {
                            "id": "m1",
                            "parent": None,
                            "role": "user",
                            "content": "hi",
                            "created_at": "2026-01-01T00:00:00+00:00",
                            "attachments": [attachment],
                        }
                    ],
                }
            ],
        }
    ).encode()


def test_a_hostile_file_in_the_zip_is_checked_like_an_upload_and_refuses_the_import(db, attachments_dir):
    bob = factories.user("bob")
    entry = {"id": "a1", "name": "x.png", "file": "attachments/a1.png"}
    data = _zip({"conversations.json": _document(entry), "attachments/a1.png": b"\x89PNG\r\n\x1a\nnope" * 10})

    with pytest.raises(ImportRejected) as refused:
        importing.conversations_import(user=bob, data=data)

    assert refused.value.code == "bad_attachment"
    assert "conversations[0].messages[0].attachments[0]" in refused.value.message
    assert Conversation.objects.count() == 0 and Attachment.objects.count() == 0
    assert not attachments_dir.exists() or list(attachments_dir.iterdir()) == []


def test_an_image_in_the_zip_is_re_encoded_on_import(db):
    bob = factories.user("bob")
    entry = {"id": "a1", "name": "trip.jpg", "file": "attachments/a1.jpg"}
    data = _zip({"conversations.json": _document(entry), "attachments/a1.jpg": files.jpeg_with_gps()})

    importing.conversations_import(user=bob, data=data)

    (attachment,) = Attachment.objects.all()
    stored = attachment_services.attachment_path(attachment_id=attachment.pk).read_bytes()
    assert b"SecretCamMaker" not in stored and attachment.media_type == "image/jpeg"


def test_a_file_in_the_zip_over_the_size_limit_is_refused(db, settings):
    settings.CHATSITE_ATTACHMENT_MAX_BYTES = 100
    bob = factories.user("bob")
    entry = {"id": "a1", "name": "big.txt", "file": "attachments/a1.txt"}
    data = _zip({"conversations.json": _document(entry), "attachments/a1.txt": b"a" * 101})
    with pytest.raises(ImportRejected) as refused:
        importing.conversations_import(user=bob, data=data)
    assert refused.value.code == "too_large"


def test_a_zip_without_conversations_json_is_refused_with_words(db):
    with pytest.raises(ImportRejected) as refused:
        importing.conversations_import(user=factories.user("bob"), data=_zip({"other.json": b"{}"}))
    assert refused.value.code == "zip" and "conversations.json" in refused.value.message


def test_markdown_names_the_attached_files(db):
    alice = factories.user("alice")
    conversation, _ = conversation_with_files(alice)
    text = exporting.conversation_export_markdown(conversation=conversation)
    assert "_Attached: chart.png, report.pdf, notes.md_" in text
