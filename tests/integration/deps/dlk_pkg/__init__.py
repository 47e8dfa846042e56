"""A package sent to nodes as a dependency by the tests."""
from .inner import OFFSET  # noqa: F401
