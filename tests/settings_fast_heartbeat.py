"""Settings of the real server processes that tests start to watch one another die
(``tests/test_outages.py``): a heartbeat every half second, so a sweep comes soon."""

from chatsite.settings import *  # noqa: F403

CHATSITE_WORKER_HEARTBEAT = 0.5
