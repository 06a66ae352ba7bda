"""Every HTTP route of the app (the socket's route is in ``realtime/routing.py``)."""

from django.urls import path

from conversations.views import attachments, chat, history, metrics, shares, transfer

urlpatterns = [
    path("", chat.chat, name="chat"),
    path("c/<uuid:conversation_id>/", chat.chat, name="conversation"),
    path("healthz", chat.healthz, name="healthz"),
    # Prometheus (docs/deploy.md, "Metrics"): a token or a staff login, else 404.
    path("metrics", metrics.metrics_scrape, name="metrics"),
    path("accounts/signup/", chat.signup, name="signup"),
    path("api/models/", chat.model_index, name="api-models"),
    # History: the paginated list, and the same list at api/conversations/
    # (kept for clients of the first version).
    path("api/history/", history.conversation_index, name="api-history"),
    path("api/conversations/", history.conversation_index, name="api-conversations"),
    path("api/conversations/<uuid:conversation_id>/", chat.conversation_detail, name="api-conversation"),
    path(
        "api/conversations/<uuid:conversation_id>/branch/",
        chat.conversation_branch,
        name="api-conversation-branch",
    ),
    path(
        "api/conversations/<uuid:conversation_id>/usage/",
        chat.conversation_usage,
        name="api-conversation-usage",
    ),
    path(
        "api/conversations/<uuid:conversation_id>/update/",
        history.conversation_update,
        name="api-conversation-update",
    ),
    path(
        "api/conversations/<uuid:conversation_id>/delete/",
        history.conversation_delete,
        name="api-conversation-delete",
    ),
    path("api/search/", history.search_index, name="api-search"),
    # Attachments (docs/protocol.md, "Attachments").
    path("api/attachments/", attachments.attachment_upload, name="api-attachments"),
    path(
        "api/attachments/<uuid:attachment_id>/file", attachments.attachment_file, name="api-attachment-file"
    ),
    path(
        "api/attachments/<uuid:attachment_id>/delete/",
        attachments.attachment_delete,
        name="api-attachment-delete",
    ),
    # Shared links: the owner's endpoints, the shared page and its copy.
    path("api/shares/", shares.share_index, name="api-shares"),
    path(
        "api/conversations/<uuid:conversation_id>/share/",
        shares.share_create,
        name="api-conversation-share",
    ),
    path("api/shares/<uuid:share_id>/update/", shares.share_update, name="api-share-update"),
    path("api/shares/<uuid:share_id>/revoke/", shares.share_revoke, name="api-share-revoke"),
    path("s/<str:token>/", shares.share_page, name="share"),
    path("s/<str:token>/continue/", shares.share_continue, name="share-continue"),
    # Export and import (docs/export-format.md).
    path(
        "c/<uuid:conversation_id>/export.json",
        transfer.conversation_export_json,
        name="conversation-export-json",
    ),
    path(
        "c/<uuid:conversation_id>/export.md",
        transfer.conversation_export_markdown,
        name="conversation-export-md",
    ),
    path(
        "c/<uuid:conversation_id>/export.zip",
        transfer.conversation_export_zip,
        name="conversation-export-zip",
    ),
    path("export/all.json", transfer.user_export_json, name="export-all-json"),
    path("export/all.zip", transfer.user_export_zip, name="export-all-zip"),
    path("export/all.md", transfer.user_export_markdown, name="export-all-md"),
    path("import/", transfer.conversations_import, name="import"),
]
