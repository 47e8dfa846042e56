"""Every ``ssl.SSLContext`` dispylike uses is made here (TLS 1.2 or newer, both sides verified).

dispy's deployment model is kept: one key and certificate (often one PEM file with
both) copied to the client and every node.  Each side presents it and accepts a
peer whose certificate chains to ``cafile`` - by default the certificate file
itself, so a self-signed certificate is its own CA.  Host names are not checked
(nodes are dialled by address and share one certificate); give ``cafile`` a real
CA and per-host certificates to tie each node to its own certificate.
"""

from __future__ import annotations

import ssl

from ..errors import AuthenticationError


def _context(purpose: ssl.Purpose, certfile: str, keyfile: str | None,
             cafile: str | None) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(purpose, cafile=cafile or certfile)
    except (OSError, ssl.SSLError) as exc:
        raise AuthenticationError(f'cannot load CA certificates {cafile or certfile!r}: '
                                  f'{exc}') from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise AuthenticationError(f'cannot load certificate {certfile!r}: {exc}') from exc
    return ctx


def server_context(certfile: str, keyfile: str | None = None,
                   cafile: str | None = None) -> ssl.SSLContext:
    """For daemons: presents ``certfile`` and requires a client certificate."""
    return _context(ssl.Purpose.CLIENT_AUTH, certfile, keyfile, cafile)


def client_context(certfile: str, keyfile: str | None = None,
                   cafile: str | None = None) -> ssl.SSLContext:
    """For clients: presents ``certfile`` and verifies the daemon's certificate."""
    return _context(ssl.Purpose.SERVER_AUTH, certfile, keyfile, cafile)


def maybe_client_context(certfile: str | None, keyfile: str | None = None,
                         cafile: str | None = None) -> ssl.SSLContext | None:
    return client_context(certfile, keyfile, cafile) if certfile else None


def maybe_server_context(certfile: str | None, keyfile: str | None = None,
                         cafile: str | None = None) -> ssl.SSLContext | None:
    return server_context(certfile, keyfile, cafile) if certfile else None
