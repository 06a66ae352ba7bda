"""Sign-up."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction

from conversations.exceptions import SignupClosed, UsernameTaken

#: Serializes sign-ups on PostgreSQL (an advisory lock; SQLite's IMMEDIATE
#: transactions already take the write lock up front).
_SIGNUP_LOCK = 0x63686174  # "chat"


def account_create(*, username: str, email: str, password: str) -> AbstractBaseUser:
    """A new account; the very first one becomes the administrator.

    Whether it is the first (and whether sign-up is open) is decided under a lock
    held until the account is committed, so two sign-ups racing on an empty
    database create one administrator, and with sign-up closed, one account."""
    user_model = get_user_model()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SIGNUP_LOCK])
        first = not user_model.objects.exists()
        if not first and not settings.CHATSITE_ALLOW_SIGNUP:
            raise SignupClosed()
        if user_model.objects.filter(username=username).exists():
            raise UsernameTaken()
        user = user_model(username=username, email=email, is_staff=first, is_superuser=first)
        user.set_password(password)
        user.save()
    return user
