"""Front ends: each adapts one wire (a byte stream, a WebSocket, an SSH terminal)
to a chat session."""
