"""Export and import (docs/export-format.md)."""

from django.urls import path

from . import views_transfer

urlpatterns = [
    path(
        "c/<uuid:conversation_id>/export.json",
        views_transfer.conversation_export_json,
        name="conversation-export-json",
    ),
    path(
        "c/<uuid:conversation_id>/export.md",
        views_transfer.conversation_export_markdown,
        name="conversation-export-md",
    ),
    path("export/all.json", views_transfer.user_export_json, name="export-all-json"),
    path("export/all.md", views_transfer.user_export_markdown, name="export-all-md"),
    path("import/", views_transfer.conversations_import, name="import"),
]
