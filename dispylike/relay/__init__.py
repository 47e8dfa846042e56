"""dispynetrelay: lets clients on one subnet find the nodes of another.

``state`` decides what is relayed (pure), ``daemon`` does it over the sockets of
``discovery.relaying``, ``cli`` is the command line (``python -m dispylike.relay``).
"""
