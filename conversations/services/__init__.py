"""Writes. Keyword-only, typed functions named <entity>_<action>; synchronous
(the async side calls them through ``database_sync_to_async``).

One module per kind of write; callers import the module they need:

- ``exchanges``: a send, a regenerate, a continue (the message, the empty
  reply and the prompt it is written from);
- ``replies``: a streaming reply's checkpoints and its terminal state, and the
  replies whose process died;
- ``conversations``: rename, pin, archive, settings, delete, the branch shown,
  and the one rule for titles;
- ``limits``: the per-user send limits;
- ``accounts``: sign-up;
- ``workers``: this process as the database knows it (id, heartbeat, channel);
- ``shares``: shared links (a frozen snapshot), revoking them, continuing one as a copy.

Refusals are ``conversations.exceptions``'s.
"""
