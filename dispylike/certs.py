"""``python -m dispylike.certs``: make a key and self-signed certificate (see security.certs)."""

import sys

from .security.certs import main

if __name__ == '__main__':
    sys.exit(main())
