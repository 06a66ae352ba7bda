"""HTTP views: the chat page, history and search, export and import; ``errors``:
the one JSON error envelope they all answer with."""
