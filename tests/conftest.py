"""Test session set-up: everything runs in a private network namespace holding only lo.

Installing happens before pytest starts; from here on nothing under test can
reach a real interface.  Where the namespace cannot be made (no root, no user
namespaces) the run continues on loopback only and says so loudly in the header.
"""

from __future__ import annotations

import os

import pytest

from dispylike.testing import NodeProcess, enter_private_netns, netns_status

_NETNS = {'how': '', 'error': ''}


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get('DISPYLIKE_TEST_NO_NETNS'):
        _NETNS['error'] = 'disabled by DISPYLIKE_TEST_NO_NETNS'
        return
    try:
        _NETNS['how'] = enter_private_netns()
    except OSError as exc:
        _NETNS['error'] = str(exc)


def pytest_report_header(config: pytest.Config) -> list[str]:
    if _NETNS['error']:
        return [f'!!! NOT in a private network namespace ({_NETNS["error"]}); tests use '
                f'127.0.0.1 only; namespace tests will be skipped. Network: {netns_status()}']
    return [f'network: {_NETNS["how"]}: {netns_status()}']


def in_private_netns() -> bool:
    return not _NETNS['error']


@pytest.fixture
def node():
    """A running 2-CPU dispynode on 127.0.0.1 (empty secret)."""
    with NodeProcess(cpus=2) as proc:
        yield proc


@pytest.fixture
def node1():
    """A running 1-CPU dispynode on 127.0.0.1."""
    with NodeProcess(cpus=1) as proc:
        yield proc
