"""Crash recovery: the client's append-only recover file (:mod:`.journal`)."""
