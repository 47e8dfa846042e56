"""Make a key and a self-signed certificate without openssl (``python -m dispylike.certs``).

The certificate carries the given host names and IP addresses as subject
alternative names, is its own CA (so peers can verify it with ``cafile`` left
unset) and is valid for client and server authentication.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import socket

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def make_self_signed(names: list[str], days: int = 825,
                     not_before: datetime.datetime | None = None) -> tuple[bytes, bytes]:
    """Return (key PEM, certificate PEM) for ``names`` (host names and/or IP addresses)."""
    if not names:
        raise ValueError('at least one name or address is needed')
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])])
    start = not_before or datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        minutes=5)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(_san(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def write_pair(key_pem: bytes, cert_pem: bytes, certfile: str, keyfile: str | None) -> None:
    """Write the certificate (and key: into ``keyfile``, or appended to ``certfile``), 0600."""
    def write(path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
    if keyfile:
        write(keyfile, key_pem)
        write(certfile, cert_pem)
    else:
        write(certfile, key_pem + cert_pem)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='python -m dispylike.certs',
                                description='Write a key and a self-signed certificate.')
    p.add_argument('--certfile', required=True, help='certificate (and key, without --keyfile)')
    p.add_argument('--keyfile', help='write the key to this file instead')
    p.add_argument('--name', action='append', default=[],
                   help='host name or IP address to include (repeatable; default: this host)')
    p.add_argument('--days', type=int, default=825, help='validity in days (default 825)')
    args = p.parse_args(argv)
    names = args.name or [socket.gethostname()]
    key_pem, cert_pem = make_self_signed(names, args.days)
    write_pair(key_pem, cert_pem, args.certfile, args.keyfile)
    print(f'wrote {args.certfile}' + (f' and {args.keyfile}' if args.keyfile else '') +
          f' for {", ".join(names)}')
    return 0
