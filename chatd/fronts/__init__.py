"""Front ends: each adapts one wire (a byte stream, a WebSocket, an SSH terminal) to a session.

They never import each other; the wire formats (lineformat, jsonformat, telnet)
and httpsite are shared modules a front end may use.
"""
