"""Helpers for testing programs that use dispylike (and for dispylike's own tests).

* :func:`enter_private_netns` - move this process into a network namespace that
  holds only loopback, so nothing it starts can reach a real interface.
* :class:`NodeProcess`, :class:`SchedulerProcess` - a real dispynode / dispyscheduler
  on 127.0.0.1, stopped by PID.
* :class:`InProcessNode` and :class:`FakeClock` - a node daemon on a thread of
  this process, with a clock the test moves (service hours).
* :func:`submit_unserved` - assert that no node runs a cluster's job.
* :func:`pid_alive` - whether a process runs (zombies do not).
* :func:`wait_until`, :func:`wait_for_nodes` - wait (bounded) for an event a test can
  observe, e.g. every node set up, instead of sleeping.
* :mod:`dispylike.testing.fuzz` - fuzz a live daemon while a legitimate client works
  (import it explicitly: it is not re-exported here).
"""

from .checks import pid_alive, submit_unserved, wait_for_nodes, wait_until
from .daemons import NodeProcess, SchedulerProcess
from .inprocess import FakeClock, InProcessNode
from .netns import enter_private_netns, netns_status

__all__ = ['FakeClock', 'InProcessNode', 'NodeProcess', 'SchedulerProcess', 'enter_private_netns',
           'netns_status', 'pid_alive', 'submit_unserved', 'wait_for_nodes', 'wait_until']
