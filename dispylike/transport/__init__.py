"""Connections over asyncio: framing + handshake + message codec on TCP/TLS."""
