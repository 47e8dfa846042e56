"""A module sent to nodes as a dependency by the tests."""


def triple(x):
    return 3 * x
