"""Event-loop construction: uvloop when installed, else the stdlib loop."""

from __future__ import annotations

import asyncio


def set_event() -> asyncio.Event:
    """An asyncio.Event that starts set (a dataclass field default for 'idle' flags)."""
    event = asyncio.Event()
    event.set()
    return event


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
