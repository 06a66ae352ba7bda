"""Settings of the load benchmark's fixed-window run (``load-fixed-window``): the
coalescing window never widens, however busy the process."""

from chatsite.settings import *  # noqa: F403

CHATSITE_COALESCE_MAX_MS = CHATSITE_COALESCE_MS or 0.0  # noqa: F405
