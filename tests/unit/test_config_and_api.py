"""dispy compatibility of names: config, logger, status constants, NodeAllocate."""

import logging

import pytest

import dispylike
import dispylike as dispy
from dispylike import config
from dispylike.nodes import NodeAllocate, node_spec


def test_port_expressions_follow_dispy_port(monkeypatch):
    assert config.port_of('ClientPort') == 9700
    assert config.port_of('NodePort') == 9701
    assert config.port_of('SharedSchedulerPort') == 9702
    monkeypatch.setattr(config, 'DispyPort', 5000)
    assert config.port_of('NodePort') == 5001
    assert config.port_of('NodePort', 7000) == 7001
    monkeypatch.setattr(config, 'NodePort', '__import__("os")')
    with pytest.raises(ValueError):
        config.port_of('NodePort')
    with pytest.raises(ValueError):
        config.port_of('Bogus')


def test_config_defaults():
    assert config.DispyPort == 9700 and config.MsgTimeout > 0 and config.MaxFileSize == 0


def test_logger_has_dispy_level_names():
    assert dispy.logger.DEBUG == logging.DEBUG and dispy.logger.INFO == logging.INFO
    assert dispy.logger.WARNING == logging.WARNING and dispy.logger.CRITICAL == logging.CRITICAL
    assert isinstance(dispy.logger, logging.Logger)


def test_status_constants_match_dispy():
    J, N = dispy.DispyJob, dispy.DispyNode
    assert (J.Created, J.Running, J.ProvisionalResult, J.Cancelled, J.Terminated, J.Abandoned,
            J.Finished) == (5, 6, 7, 8, 9, 10, 11)
    assert (N.Initialized, N.Closed, N.AvailInfo) == (4, 3, 2)


def test_node_allocate_defaults_and_matching():
    a = NodeAllocate('10.77.0.*', cpus=2)
    assert a.matches('10.77.0.5') and not a.matches('10.78.0.5')
    assert a.allocate(None, '10.77.0.5', 'h', 8) == 2
    assert NodeAllocate('127.0.0.1', cpus=-1).allocate(None, '127.0.0.1', 'h', 4) == 3
    assert NodeAllocate('127.0.0.1').allocate(None, '127.0.0.1', 'h', 4) == 4
    assert node_spec(('127.0.0.1', 5)).port == 5
    assert node_spec('localhost').ip_addr in ('127.0.0.1', '::1')
    with pytest.raises(TypeError):
        node_spec(42)


def test_public_api_exports():
    for name in ('JobCluster', 'DispyJob', 'DispyNode', 'DispyNodeAvailInfo', 'NodeAllocate',
                 'LocalNode', 'logger', 'config', 'recover_jobs', 'RecoverFileError'):
        assert hasattr(dispylike, name)


def test_bad_pulse_interval_says_so():
    with pytest.raises(ValueError, match='pulse_interval'):
        dispy.JobCluster(lambda: 0, nodes=['127.0.0.1'], pulse_interval=0.5)


def test_a_missing_certificate_file_is_named_in_the_error(tmp_path):
    from dispylike.errors import AuthenticationError
    from dispylike.security.tls import client_context, server_context
    missing = str(tmp_path / 'nope.pem')
    for make in (client_context, server_context):
        with pytest.raises(AuthenticationError, match='nope.pem'):
            make(missing)
