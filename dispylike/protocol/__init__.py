"""Sans-IO wire protocol: frames, handshake and messages.  No sockets, no asyncio."""
