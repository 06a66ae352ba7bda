"""Everything on the event loop: the socket, the reply tasks, and this process among several."""
