"""HTTP views: the chat page, history and search, export and import."""
