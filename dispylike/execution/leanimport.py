"""The computation process's first import: cloudpickle, without an optional extra.

Every module the computation process holds is copied into each job process it
forks, and so is every mapping of an extension module: on the 2-vCPU VM of
docs/PERFORMANCE.md each mapping costs ~2 us of page-table work per fork and
exit, and each MB of the process's memory ~0.03 ms per job (issue 8).
cloudpickle 2.x imports typing_extensions whenever it is installed, only to
recognise that package's ``Literal`` and ``Final`` when it *pickles* type hints
by value (on Python 3.10+ they are mostly typing's own); typing_extensions brings
15 modules (1.7 MB here) and the ``_socket`` extension with it (cloudpickle 3.x
imports it no more: there this module changes nothing).  The computation
process and its jobs unpickle with cloudpickle and seldom pickle with it, so this
module imports cloudpickle while an import of typing_extensions fails (a ``None``
entry in ``sys.modules`` makes an import raise ImportError, which cloudpickle
handles), then removes that entry: a job importing typing_extensions itself gets
it as usual.  Measured with cloudpickle 2.1.0 (``bench/profile.py --jobs 3000
--each``, 4 interleaved pairs): 1,075-1,119 jobs/s without, 1,101-1,114 with; CPU
per job 1.60-1.66 ms without, 1.59-1.61 with.
"""

from __future__ import annotations

import sys

LEFT_OUT = ('typing_extensions',)


def _import_cloudpickle():
    absent = [name for name in LEFT_OUT if name not in sys.modules]
    for name in absent:
        sys.modules[name] = None   # type: ignore[assignment]
    try:
        import cloudpickle
    finally:
        for name in absent:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return cloudpickle


cloudpickle = _import_cloudpickle()
