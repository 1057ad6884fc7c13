"""A private CA and the certificates of an etcd cluster's mutual TLS, made once per cluster.

`ensure_certs(directory, hosts)` writes, if absent:
  ca.pem / ca.key          the cluster CA (the key only signs the two certificates below)
  member.pem / member.key  every member's certificate, for its client and peer ports (server
                           and client auth: members dial each other), naming each member host
  client.pem / client.key  Tessera's client certificate (storage/metadata/etcd_tls.py)
Keys are written 0600 and never logged. Members trust only this CA, so a connection without
a certificate it signed is refused at the TLS handshake (--client-cert-auth)."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from storage.metadata.etcd_tls import EtcdClientTLS, client_tls_in

VALID_DAYS = 3650  # a local cluster's certificates outlive it; rotation is not automated
MEMBER_CN = "etcd member"  # members' peer ports accept only this CN (--peer-cert-allowed-cn)
FILES = ("ca.pem", "ca.key", "member.pem", "member.key", "client.pem", "client.key")
CLIENT_FILES = ("ca.pem", "client.pem", "client.key")  # all a client needs: no private CA key


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _sign(subject: str, key: ec.EllipticCurvePrivateKey, ca_key: ec.EllipticCurvePrivateKey,
          usages: list[x509.ObjectIdentifier] | None, hosts: tuple[str, ...] = ()
          ) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject))
         .issuer_name(_name("tessera etcd CA")).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
         .add_extension(x509.BasicConstraints(ca=usages is None, path_length=None),
                        critical=True))
    if usages is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if hosts:
        b = b.add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]),
                            critical=False)
    return b.sign(ca_key, hashes.SHA256())


def _write(path: Path, data: bytes) -> None:
    """Created 0600 from the start (never readable by others, even briefly)."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ensure_certs(directory: Path, hosts: tuple[str, ...]) -> EtcdClientTLS:
    """The cluster's certificates in `directory` (made when any file is missing, for the
    member `hosts`, plus 127.0.0.1 and localhost); Tessera's client files."""
    if not all((directory / f).exists() for f in FILES):
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        member_key = ec.generate_private_key(ec.SECP256R1())
        client_key = ec.generate_private_key(ec.SECP256R1())
        names = tuple(dict.fromkeys((*hosts, "127.0.0.1", "localhost")))
        both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        pem = serialization.Encoding.PEM
        out = {
            "ca.pem": _sign("tessera etcd CA", ca_key, ca_key, None).public_bytes(pem),
            "ca.key": _key_pem(ca_key),
            "member.pem": _sign(MEMBER_CN, member_key, ca_key, both, names).public_bytes(pem),
            "member.key": _key_pem(member_key),
            "client.pem": _sign("tessera", client_key, ca_key,
                                [ExtendedKeyUsageOID.CLIENT_AUTH]).public_bytes(pem),
            "client.key": _key_pem(client_key),
        }
        for name, data in out.items():
            _write(directory / name, data)
    return client_tls_in(directory)


def main(argv: list[str] | None = None) -> int:
    """`python -m ops.etcdcerts DIR HOST...`: the certificates of members on HOSTs, in DIR
    (docker-compose's one-shot `etcd-certs` service; nothing is remade if all are there)."""
    import argparse  # noqa: PLC0415

    p = argparse.ArgumentParser(prog="python -m ops.etcdcerts", description=main.__doc__)
    p.add_argument("directory", type=Path)
    p.add_argument("hosts", nargs="+", help="each member's host name or IP address")
    p.add_argument("--client-dir", type=Path, help="also copy the client's files (ca.pem, "
                   "client.pem, client.key) here: what gateways and tools mount, without the "
                   "CA's and the members' keys")
    a = p.parse_args(argv)
    ensure_certs(a.directory, tuple(a.hosts))
    if a.client_dir is not None:
        a.client_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(a.client_dir, 0o700)
        for name in CLIENT_FILES:
            _write(a.client_dir / name, (a.directory / name).read_bytes())
    print(f"etcd certificates in {a.directory}"
          + (f", the client's in {a.client_dir}" if a.client_dir is not None else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
