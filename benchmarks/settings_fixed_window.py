"""Settings of the load benchmark's fixed-window run (``load-fixed-window``): the
coalescing window never widens with the number of live replies."""

from chatsite.settings import *  # noqa: F403

CHATSITE_COALESCE_FRAMES_PER_S = None
