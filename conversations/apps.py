import asyncio
import logging

from django.apps import AppConfig
from django.conf import settings

log = logging.getLogger(__name__)


class ConversationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "conversations"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        user_logged_out.connect(close_sockets_on_logout, dispatch_uid="chatsite-logout")

        from conversations.moderation import moderation_load

        moderation_load()  # a moderation rules file that cannot be used stops the process here


def close_sockets_on_logout(sender, request, user, **kwargs) -> None:
    """Close every socket of the session that just logged out, in any process."""
    if user is None:
        return
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from conversations.realtime.cluster import user_group

    layer = get_channel_layer()
    if layer is None:
        return
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    message = {"type": "session.ended", "session_key": session_key}

    async def tell_sockets() -> None:
        # Waits at most CHATSITE_LAYER_TIMEOUT: the logout answers even with
        # Redis frozen. The send itself goes on in the server's event loop and
        # still closes the sockets if Redis comes back.
        sending = asyncio.ensure_future(layer.group_send(user_group(user.pk), message))
        done, _ = await asyncio.wait({sending}, timeout=settings.CHATSITE_LAYER_TIMEOUT)
        if not done:
            log.warning("the channel layer did not answer; sockets of the session close on their re-check")
            sending.add_done_callback(_log_layer_failure)
        else:
            _log_layer_failure(sending)

    async_to_sync(tell_sockets)()


def _log_layer_failure(sending) -> None:
    if not sending.cancelled() and sending.exception() is not None:
        # The layer is down: the session re-check closes the sockets instead.
        log.warning("could not tell sockets about the logout (%s)", type(sending.exception()).__name__)
