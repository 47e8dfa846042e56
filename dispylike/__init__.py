"""dispylike: run Python functions on many machines, with dispy's API.

``import dispylike as dispy`` is enough for a dispy program.  The public names
are loaded on first use, so processes that only need a part of the package
(the node's computation processes, which fork once per job) stay small.
"""

from __future__ import annotations

import importlib
from typing import Any

from .version import __version__

_EXPORTS = {
    'JobCluster': 'dispylike.client.cluster',
    'SharedJobCluster': 'dispylike.client.shared',
    'recover_jobs': 'dispylike.client.recover',
    'RecoverFileError': 'dispylike.persistence.journal',
    'DispyJob': 'dispylike.job',
    'DispyNode': 'dispylike.nodes',
    'DispyNodeAvailInfo': 'dispylike.nodes',
    'NodeAllocate': 'dispylike.nodes',
    'LocalNode': 'dispylike.nodes',
    'DispyError': 'dispylike.errors',
    'logger': 'dispylike.log',
    'config': 'dispylike.config',
}

__all__ = ['DispyError', 'DispyJob', 'DispyNode', 'DispyNodeAvailInfo', 'JobCluster',
           'LocalNode', 'NodeAllocate', 'RecoverFileError', 'SharedJobCluster', '__version__',
           'config', 'logger', 'recover_jobs']


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    if name == 'config':
        value = importlib.import_module(module)
    else:
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
