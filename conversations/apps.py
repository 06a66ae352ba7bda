import logging

from django.apps import AppConfig

log = logging.getLogger(__name__)


class ConversationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "conversations"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        user_logged_out.connect(close_sockets_on_logout, dispatch_uid="chatsite-logout")


def close_sockets_on_logout(sender, request, user, **kwargs) -> None:
    """Close every socket of the session that just logged out, in any process."""
    if user is None:
        return
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from .consumers import user_group

    layer = get_channel_layer()
    if layer is None:
        return
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    try:
        async_to_sync(layer.group_send)(
            user_group(user.pk), {"type": "session.ended", "session_key": session_key}
        )
    except Exception as exc:  # the layer is down: sockets close on their next frame
        log.warning("could not tell sockets about the logout (%s)", type(exc).__name__)
