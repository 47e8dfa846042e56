"""dispylike: run Python functions on many machines, with dispy's API.

``import dispylike as dispy`` is enough for a dispy program.
"""

from . import config
from .client.cluster import JobCluster
from .errors import DispyError
from .job import DispyJob
from .log import logger
from .nodes import DispyNode, DispyNodeAvailInfo, LocalNode, NodeAllocate
from .version import __version__

__all__ = ['JobCluster', 'DispyJob', 'DispyNode', 'DispyNodeAvailInfo', 'NodeAllocate',
           'LocalNode', 'DispyError', 'logger', 'config', '__version__']
