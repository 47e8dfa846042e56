"""A dispynode without channel protection: for W7's "plain" baseline only.

dispylike always seals frames (AES-256-GCM) when TLS is not used and has
no option to turn that off; the benchmark measures the cost by running both ends
with this patch (plain_frames()) in place.  Never use it outside the benchmark.
Run as ``python -m plainnode ARGS`` with bench/loads on the path.
"""
from __future__ import annotations

import sys


def plain_frames() -> None:
    """After the handshake, frames stay unsealed (both ends must do this)."""
    from dispylike.protocol.frames import DEFAULT_FRAME_CAP, DEFAULT_MESSAGE_CAP
    from dispylike.transport import connection

    authenticated = connection.Connection._authenticated

    def unsealed(self, side):
        authenticated(self, side)
        self.cipher = None
        self.decoder.opener = None
        self.decoder.set_caps(DEFAULT_FRAME_CAP, DEFAULT_MESSAGE_CAP)
    connection.Connection._authenticated = unsealed


if __name__ == '__main__':
    plain_frames()
    from dispylike.node.cli import main
    sys.exit(main())
