"""Export and import of conversations (chatsite format, ChatGPT format)."""
