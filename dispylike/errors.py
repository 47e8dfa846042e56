"""The one exception tree of dispylike.

Every error the library raises derives from :class:`DispyError`.  Errors about
the network also derive from the matching builtin so ``except OSError`` and
``except ConnectionError`` keep working::

    DispyError
     ├── ProtocolError (ValueError)        peer sent bytes we cannot accept
     │    ├── FrameTooLarge                a frame/message above the cap
     │    └── IncompatiblePeer             different protocol version
     ├── AuthenticationError (PermissionError)   handshake failed (secret/cert)
     ├── ConnectionClosed (ConnectionError)      closed by us or broken by the peer
     ├── HandshakeTimeout (TimeoutError)         peer silent during the handshake
     ├── ComputationError                  a computation could not be set up on a node
     └── ClusterClosed                     the cluster was closed; no more submits

OS and SSL errors are converted in exactly one place:
:func:`dispylike.transport.connection.translate_os_error`.
"""

from __future__ import annotations


class DispyError(Exception):
    """Base of every dispylike error."""


class ProtocolError(DispyError, ValueError):
    """The peer sent something that violates the wire protocol."""


class FrameTooLarge(ProtocolError):
    """A frame or reassembled message exceeded the configured cap."""


class IncompatiblePeer(ProtocolError):
    """The peer speaks a different protocol version."""


class AuthenticationError(DispyError, PermissionError):
    """The peer could not prove it knows the shared secret (or failed TLS)."""


class ConnectionClosed(DispyError, ConnectionError):
    """The connection is closed: by us, or broken by the peer."""


class HandshakeTimeout(DispyError, TimeoutError):
    """The peer did not complete the handshake in time."""


class ComputationError(DispyError):
    """A computation could not be packaged, sent or set up."""


class ClusterClosed(DispyError):
    """The cluster has been closed; jobs can no longer be submitted."""
