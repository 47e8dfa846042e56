"""``dispylike.logger``: a stdlib logger that also carries dispy's level names.

dispy programs write ``loglevel=dispy.logger.DEBUG``; those names are class
attributes here, so the logger is a plain :class:`logging.Logger` otherwise.
"""

from __future__ import annotations

import logging
import sys


class DispyLogger(logging.Logger):
    """A logging.Logger with dispy's level constants as attributes."""

    DEBUG = logging.DEBUG
    INFO = logging.INFO
    WARNING = logging.WARNING
    WARN = logging.WARNING
    ERROR = logging.ERROR
    CRITICAL = logging.CRITICAL


def _make_logger(name: str) -> DispyLogger:
    log = logging.getLogger(name)
    log.__class__ = DispyLogger  # only adds class attributes; no state changes
    return log  # type: ignore[return-value]


logger: DispyLogger = _make_logger('dispylike')


def setup_logging(level: int | None = None, stream=None) -> None:
    """Give the dispylike logger a console handler unless the program configured one.

    Programs that configure :mod:`logging` themselves (handlers on the root or
    on 'dispylike') keep full control; this never adds a second handler.
    """
    if level is not None:
        logger.setLevel(level)
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter('%(asctime)s %(name)s %(levelname)s - %(message)s',
                                           '%Y-%m-%d %H:%M:%S'))
    logger.addHandler(handler)
