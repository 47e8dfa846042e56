"""TLS contexts and certificate generation (authentication by secret is in protocol.handshake)."""
