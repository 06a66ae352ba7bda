"""History and search endpoints (``conversations/views_history.py``).

The list lives at ``api/history/`` and the actions at
``api/conversations/<id>/update/`` and ``.../delete/``: ``conversations/urls.py``
routes ``api/conversations/`` and ``api/conversations/<id>/`` (GET only) before
this module is included.
"""

from django.urls import path

from . import views_history

urlpatterns = [
    path("api/history/", views_history.conversation_index, name="api-history"),
    path(
        "api/conversations/<uuid:conversation_id>/update/",
        views_history.conversation_update,
        name="api-conversation-update",
    ),
    path(
        "api/conversations/<uuid:conversation_id>/delete/",
        views_history.conversation_delete,
        name="api-conversation-delete",
    ),
    path("api/search/", views_history.search_index, name="api-search"),
]
