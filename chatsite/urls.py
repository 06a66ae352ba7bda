from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from conversations.views.chat import signup_open


class LoginView(auth_views.LoginView):
    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["signup_open"] = signup_open()
        return context


urlpatterns = [
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("", include("conversations.urls")),
]
