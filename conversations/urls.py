from django.urls import include, path

from . import views, views_history

urlpatterns = [
    path("", views.chat, name="chat"),
    path("c/<uuid:conversation_id>/", views.chat, name="conversation"),
    # The same paginated list as api/history/ (kept for clients of the first version).
    path("api/conversations/", views_history.conversation_index, name="api-conversations"),
    path(
        "api/conversations/<uuid:conversation_id>/",
        views.conversation_detail,
        name="api-conversation",
    ),
    path(
        "api/conversations/<uuid:conversation_id>/branch/",
        views.conversation_branch,
        name="api-conversation-branch",
    ),
    path("api/models/", views.model_index, name="api-models"),
    path("accounts/signup/", views.signup, name="signup"),
    path("healthz", views.healthz, name="healthz"),
    path("", include("conversations.urls_search")),
    path("", include("conversations.urls_transfer")),
]
