"""Configuration parameters, as in dispy's ``config`` module.

``DispyPort`` is the base of the port range.  ``ClientPort``, ``NodePort`` and
``SharedSchedulerPort`` are *expressions* over ``DispyPort`` evaluated at run
time (change ``DispyPort`` and they follow), exactly as dispy documents.
Evaluate one with :func:`port_of`.  ``RelayPort`` (dispylike's own) is where
dispynetrelay listens for clients' probes.
"""

from __future__ import annotations

DispyPort = 9700
HTTPServerPort = 8181
IPv4MulticastGroup = '239.255.97.5'
IPv6MulticastGroup = 'ff05::674f:59ba:f7c9:51ed'
MsgTimeout = 10
#: Largest file accepted from a peer, in bytes; 0 means no limit (dispy's default).
MaxFileSize = 0
SharedSchedulerClientPort = 0
#: A job whose node is lost this many times (reentrant clusters) ends Abandoned
#: instead of running again (dispylike's own setting; read when a cluster starts).
MaxJobLosses = 3

ClientPort = 'DispyPort'
NodePort = 'DispyPort + 1'
SharedSchedulerPort = 'DispyPort + 2'
#: UDP port where dispynetrelay takes clients' probes (dispylike's own: dispy's relay
#: listens on the node port, which a node on the same host would share).
RelayPort = 'DispyPort + 3'

_PORT_NAMES = ('ClientPort', 'NodePort', 'SharedSchedulerPort', 'RelayPort')


def port_of(name: str, dispy_port: int | None = None) -> int:
    """Evaluate the port expression ``name`` ('ClientPort', 'NodePort', ...).

    Only the form ``DispyPort [+|- N]`` is accepted: the expression is parsed,
    never passed to ``eval``.
    """
    if name not in _PORT_NAMES:
        raise ValueError(f'unknown port expression {name!r}')
    expr = str(globals()[name]).replace(' ', '')
    base = DispyPort if dispy_port is None else int(dispy_port)
    if not expr.startswith('DispyPort'):
        return int(expr)
    rest = expr[len('DispyPort'):]
    if not rest:
        return base
    if rest[0] not in '+-' or not rest[1:].isdigit():
        raise ValueError(f'cannot evaluate port expression {expr!r}')
    offset = int(rest[1:])
    return base + offset if rest[0] == '+' else base - offset
