"""Sign-up: the first account is the administrator, and only one ever is."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models.signals import pre_save
from django.test import AsyncClient, Client

pytestmark = pytest.mark.django_db(transaction=True)
User = get_user_model()


def sign_up(client: Client, username: str, password: str = "a-long-enough-pw-42", **extra):
    data = {"username": username, "password1": password, "password2": password, **extra}
    return client.post("/accounts/signup/", data)


def test_the_first_account_is_the_administrator_and_is_logged_in(settings):
    settings.CHATSITE_ALLOW_SIGNUP = False
    client = Client()
    assert "first account" in client.get("/accounts/signup/").content.decode()
    response = sign_up(client, "ada", email="ada@example.org")
    assert response.status_code == 302 and response.url == "/"
    ada = User.objects.get()
    assert (ada.username, ada.email, ada.is_superuser, ada.is_staff) == ("ada", "ada@example.org", True, True)
    assert ada.check_password("a-long-enough-pw-42")
    assert client.session["_auth_user_id"] == str(ada.pk)  # logged in


def test_sign_up_is_closed_once_an_account_exists_unless_allowed(settings):
    settings.CHATSITE_ALLOW_SIGNUP = False
    User.objects.create_user("ada", password="pw-ada-12345")
    client = Client()
    assert client.get("/accounts/signup/").status_code == 403
    response = sign_up(client, "eve")
    assert response.status_code == 403 and "Sign-up is closed" in response.content.decode()
    assert list(User.objects.values_list("username", flat=True)) == ["ada"]


def test_later_accounts_when_allowed_are_not_administrators(settings):
    settings.CHATSITE_ALLOW_SIGNUP = True
    User.objects.create_user("ada", password="pw-ada-12345")
    assert sign_up(Client(), "bea").status_code == 302
    bea = User.objects.get(username="bea")
    assert (bea.is_superuser, bea.is_staff) == (False, False)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (
            {"username": "ada", "password1": "a-long-enough-pw-42", "password2": "another-pw-4242"},
            "password2",
        ),
        ({"username": "ada", "password1": "123", "password2": "123"}, "password2"),  # too short, numeric
        (
            {"username": "", "password1": "a-long-enough-pw-42", "password2": "a-long-enough-pw-42"},
            "username",
        ),
        (
            {"username": "a d a", "password1": "a-long-enough-pw-42", "password2": "a-long-enough-pw-42"},
            "username",
        ),
        (
            {
                "username": "ada",
                "email": "no",
                "password1": "a-long-enough-pw-42",
                "password2": "a-long-enough-pw-42",
            },
            "email",
        ),
    ],
)
def test_a_bad_sign_up_form_shows_its_errors_and_creates_nothing(data, field):
    response = Client().post("/accounts/signup/", data)
    assert response.status_code == 200
    assert response.context["form"].errors[field]
    assert not User.objects.exists()


def test_a_taken_username_is_a_form_error(settings):
    settings.CHATSITE_ALLOW_SIGNUP = True
    User.objects.create_user("ada", password="pw-ada-12345")
    response = sign_up(Client(), "ada")
    assert response.status_code == 200 and response.context["form"].errors["username"]
    assert User.objects.count() == 1


@pytest.mark.parametrize("allow", [False, True])
def test_two_sign_ups_racing_on_an_empty_database_make_one_administrator(settings, allow):
    """Both requests run for real, each in its own thread and database connection.
    Each waits at the account's save for the other to get there too: without a lock
    around the "is it the first?" decision, both get there, both decided "first"."""
    settings.CHATSITE_ALLOW_SIGNUP = allow
    both_deciding = threading.Barrier(2, timeout=1.5)
    names = ("ada", "bea")

    def meet(sender, instance, **kwargs) -> None:
        if instance.username in names:
            try:
                both_deciding.wait()
            except threading.BrokenBarrierError:  # the other one is (rightly) held at the lock
                pass

    statuses: dict[str, int] = {}

    def attempt(name: str) -> None:
        try:
            statuses[name] = sign_up(Client(), name).status_code
        finally:
            connection.close()

    pre_save.connect(meet, sender=User, dispatch_uid="signup-race")
    try:
        threads = [threading.Thread(target=attempt, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        pre_save.disconnect(dispatch_uid="signup-race", sender=User)
    assert User.objects.filter(is_superuser=True).count() == 1
    assert sorted(statuses.values()) == ([302, 302] if allow else [302, 403])
    assert User.objects.count() == (2 if allow else 1)


@pytest.mark.usefixtures("clean_loop_state")
async def test_the_model_list_needs_a_login_and_lists_the_configured_models(upstream, alice):
    assert (await AsyncClient().get("/api/models/")).status_code == 401
    client = AsyncClient()
    await client.aforce_login(alice)
    body = (await client.get("/api/models/")).json()
    assert body["default"] == "openai/fake"
    assert "openai/fake" in [m["id"] for m in body["models"]]
