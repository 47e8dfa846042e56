"""Event-loop construction: uvloop when installed, else the stdlib loop.

``DISPYLIKE_UVLOOP=0`` in the environment forces the stdlib loop (for comparisons
and for ruling uvloop out when chasing a bug)."""

from __future__ import annotations

import asyncio
import os


def set_event() -> asyncio.Event:
    """An asyncio.Event that starts set (a dataclass field default for 'idle' flags)."""
    event = asyncio.Event()
    event.set()
    return event


def new_event_loop() -> asyncio.AbstractEventLoop:
    if os.environ.get('DISPYLIKE_UVLOOP') == '0':
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
