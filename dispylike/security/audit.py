"""Test-only proof that nothing is unpickled for a peer that has not authenticated.

Each accepted connection runs in its own task with :data:`PEER` set to its
:class:`PeerState`: ``transport.connection`` sets it at accept and marks it
authenticated once the handshake succeeds; tasks started by the connection's
handler inherit it.

With ``DISPYLIKE_UNPICKLE_AUDIT=FILE`` in its environment, a daemon's
:func:`install_from_env` (called once at start) installs a profile hook that
sees every call of an unpickler - ``pickle.loads``/``load`` (the C functions,
however they were imported: ``cloudpickle.loads`` is the same object), the
``load`` method of any ``pickle.Unpickler`` subclass, and the pure-Python
``pickle._Unpickler.load`` - on every thread, charges it to the current
connection's state, and writes the counts to FILE as JSON at exit::

    {"pid": 123, "unpickles": {"unauthenticated": 0, "authenticated": 812, "outside": 40},
     "connections": {"accepted": 2051, "authenticated": 9},
     "unauthenticated_peers": []}

``outside`` is unpickling outside any connection's task (the daemon's own
pipes to its computation processes).  Without the variable nothing is
installed: the production cost is one small object and one context variable
set per accepted connection.
"""

from __future__ import annotations

import atexit
import contextvars
import json
import os
import pickle
import sys
import threading
import types
from dataclasses import dataclass, field

ENV = 'DISPYLIKE_UNPICKLE_AUDIT'
_MAX_PEERS = 50


@dataclass(slots=True)
class PeerState:
    """One accepted connection, as the audit sees it."""

    peer: str
    authenticated: bool = False


PEER: contextvars.ContextVar[PeerState | None] = contextvars.ContextVar('dispylike_peer',
                                                                         default=None)


@dataclass
class _Report:
    path: str
    pid: int = field(default_factory=os.getpid)
    unpickles: dict[str, int] = field(default_factory=lambda: {
        'unauthenticated': 0, 'authenticated': 0, 'outside': 0})
    connections: dict[str, int] = field(default_factory=lambda: {
        'accepted': 0, 'authenticated': 0})
    unauthenticated_peers: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def write(self) -> None:
        if os.getpid() != self.pid:
            return        # a forked child (computation process) has nothing to report
        with self.lock:
            data = {'pid': self.pid, 'unpickles': dict(self.unpickles),
                    'connections': dict(self.connections),
                    'unauthenticated_peers': list(self.unauthenticated_peers)}
        tmp = f'{self.path}.tmp{self.pid}'
        with open(tmp, 'w') as f:
            json.dump(data, f)
        os.replace(tmp, self.path)


_report: _Report | None = None


def peer_accepted(peer: str) -> PeerState:
    """Called by the server for each accepted connection, in that connection's task."""
    state = PeerState(peer)
    PEER.set(state)
    if _report is not None:
        _report.connections['accepted'] += 1
    return state


def peer_authenticated(state: PeerState) -> None:
    state.authenticated = True
    if _report is not None:
        _report.connections['authenticated'] += 1


def _charge() -> None:
    state = PEER.get()
    report = _report
    if report is None:
        return
    with report.lock:
        if state is None:
            report.unpickles['outside'] += 1
        elif state.authenticated:
            report.unpickles['authenticated'] += 1
        else:
            report.unpickles['unauthenticated'] += 1
            if len(report.unauthenticated_peers) < _MAX_PEERS:
                report.unauthenticated_peers.append(state.peer)


_C_LOADS = pickle.loads
_C_LOAD = pickle.load
_C_UNPICKLER = pickle.Unpickler
_PY_LOAD = pickle._Unpickler.load.__code__


def _profile(frame: types.FrameType, event: str, arg: object) -> None:
    # identity checks only: hashing ``arg`` could raise for a method of an unhashable object
    if event == 'c_call':
        if arg is _C_LOADS or arg is _C_LOAD or (
                type(arg) is types.BuiltinMethodType and arg.__name__ == 'load'
                and isinstance(arg.__self__, _C_UNPICKLER)):
            _charge()
    elif event == 'call' and frame.f_code is _PY_LOAD:
        _charge()


def _uninstall_in_child() -> None:
    sys.setprofile(None)
    threading.setprofile(None)


def install(path: str) -> None:
    """Start auditing this process (idempotent); the report goes to ``path`` at exit."""
    global _report
    if _report is not None:
        return
    _report = _Report(path)
    threading.setprofile(_profile)
    sys.setprofile(_profile)
    os.register_at_fork(after_in_child=_uninstall_in_child)
    atexit.register(_report.write)


def install_from_env() -> bool:
    """Install if ``DISPYLIKE_UNPICKLE_AUDIT`` names a file; True if installed."""
    path = os.environ.get(ENV)
    if not path:
        return False
    install(path)
    return True


def write_report() -> None:
    """Write the report now (it is also written at exit)."""
    if _report is not None:
        _report.write()
