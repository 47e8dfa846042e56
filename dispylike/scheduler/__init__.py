"""dispyscheduler: share nodes between client programs (see :mod:`.daemon`)."""
