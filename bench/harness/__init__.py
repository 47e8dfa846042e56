"""Benchmark harness: runs real dispy and dispylike side by side (see ../README.md)."""
