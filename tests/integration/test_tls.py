"""TLS between client and node: certificates made by dispylike.certs, both sides verified."""

import datetime
import os
import stat
import subprocess
import sys

import cloudpickle
import pytest
from cryptography import x509

import dispylike
from dispylike.security.certs import make_self_signed, write_pair
from dispylike.testing import NodeProcess, submit_unserved

cloudpickle.register_pickle_by_value(sys.modules[__name__])
#: Before 3.11 asyncio runs server-side TLS itself and logs failures only in debug mode.
NODE_LOGS_TLS = sys.version_info >= (3, 11)


def square(n):
    return n * n


@pytest.fixture
def cert(tmp_path):
    path = tmp_path / 'shared.pem'
    write_pair(*make_self_signed(['127.0.0.1', 'localhost']), str(path), None)
    return str(path)


@pytest.fixture
def other_cert(tmp_path):
    certfile, keyfile = tmp_path / 'other.crt', tmp_path / 'other.key'
    write_pair(*make_self_signed(['127.0.0.1']), str(certfile), str(keyfile))
    return str(certfile), str(keyfile)


def cluster_for(node, **kw):
    return dispylike.JobCluster(square, nodes=[(node.host, node.port)], **kw)


def test_jobs_over_tls(cert):
    with NodeProcess(cpus=1, extra=['--certfile', cert]) as node:
        with cluster_for(node, certfile=cert) as c:
            assert [c.submit(i)() for i in range(3)] == [0, 1, 4]
        assert 'TLS' in node.log()


def test_plain_client_against_tls_node_fails_clearly(cert, caplog):
    with NodeProcess(cpus=1, extra=['--certfile', cert]) as node:
        with cluster_for(node) as c:
            submit_unserved(c, 2)
        assert any('TLS' in r.getMessage() or 'closed' in r.getMessage()
                   for r in caplog.records if r.levelname == 'WARNING')
        if NODE_LOGS_TLS:
            assert 'rejected' in node.log() and 'TLS' in node.log()
        with cluster_for(node, certfile=cert) as c:        # the node is unaffected
            assert c.submit(3)() == 9


def test_tls_client_against_plain_node_fails_clearly(cert, caplog):
    with NodeProcess(cpus=1) as node:
        with cluster_for(node, certfile=cert) as c:
            submit_unserved(c, 2)
        assert any('TLS' in r.getMessage() for r in caplog.records)
        assert 'speaks TLS' in node.log()


def test_wrong_certificate_is_refused_on_both_ends(cert, other_cert, caplog):
    certfile, keyfile = other_cert
    with NodeProcess(cpus=1, extra=['--certfile', cert]) as node:
        with cluster_for(node, certfile=certfile, keyfile=keyfile) as c:
            submit_unserved(c, 2)
        assert any('certificate' in r.getMessage().lower() for r in caplog.records)
        if NODE_LOGS_TLS:
            assert 'rejected' in node.log()
        with cluster_for(node, certfile=cert) as c:
            assert c.submit(4)() == 16


def test_expired_certificate_is_refused(tmp_path, caplog):
    old = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    path = tmp_path / 'expired.pem'
    write_pair(*make_self_signed(['127.0.0.1'], days=30, not_before=old), str(path), None)
    with NodeProcess(cpus=1, extra=['--certfile', str(path)]) as node:
        with cluster_for(node, certfile=str(path)) as c:
            submit_unserved(c, 2)
        assert any('expired' in r.getMessage() for r in caplog.records)


def test_embedded_node_with_tls(cert):
    with dispylike.JobCluster(square, nodes=[dispylike.LocalNode(cpus=1)], certfile=cert) as c:
        assert c.submit(5)() == 25


def test_certs_command_writes_private_files_with_names(tmp_path):
    certfile, keyfile = tmp_path / 'n.crt', tmp_path / 'n.key'
    proc = subprocess.run([sys.executable, '-m', 'dispylike.certs', '--certfile', str(certfile),
                           '--keyfile', str(keyfile), '--name', 'node1', '--name', '10.77.0.2'],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for path in (certfile, keyfile):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    crt = x509.load_pem_x509_certificate(certfile.read_bytes())
    san = crt.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ['node1']
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ['10.77.0.2']


def test_expired_client_certificate_is_refused_on_both_ends_node_unaffected(tmp_path, caplog):
    good, expired = tmp_path / 'good.pem', tmp_path / 'expired.pem'
    old = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    write_pair(*make_self_signed(['127.0.0.1']), str(good), None)
    write_pair(*make_self_signed(['old-client'], days=30, not_before=old), str(expired), None)
    cas = tmp_path / 'cas.pem'        # both are trusted: only the expiry can refuse one
    certs = [p.read_text() for p in (good, expired)]
    cas.write_text(''.join(c[c.index('-----BEGIN CERTIFICATE'):] for c in certs))
    with NodeProcess(cpus=1, extra=['--certfile', str(good), '--cafile', str(cas)]) as node:
        with cluster_for(node, certfile=str(expired), cafile=str(cas)) as c:
            submit_unserved(c, 2)
        assert any('certificate' in r.getMessage() for r in caplog.records
                   if r.levelname == 'WARNING')
        if NODE_LOGS_TLS:
            assert 'rejected' in node.log() and 'expired' in node.log()
        with cluster_for(node, certfile=str(good), cafile=str(cas)) as c:   # unaffected
            assert c.submit(6)() == 36
        assert node.alive()
