"""Pure scheduling core: job/node state machine and load-balancing policy (no I/O)."""
