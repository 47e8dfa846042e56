"""dispynode: the daemon that runs jobs (``python -m dispylike.node``)."""
