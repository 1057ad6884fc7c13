"""The client certificate Tessera shows etcd (mutual TLS), and the CA it checks members by.

etcd members started with --client-cert-auth refuse any client that does not present a
certificate signed by their trusted CA: this is what keeps the metadata (every object's
manifest, every wrapped tenant key) from whoever can reach a member's client port. The same
files serve the gRPC channel (key calls) and aiohttp (leases, watches, maintenance)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc


@dataclass(frozen=True)
class EtcdClientTLS:
    """PEM files: the CA the members' certificates are checked against, and the client's
    certificate and private key (0600: whoever reads it can act as Tessera on etcd)."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def ssl_context(self) -> ssl.SSLContext:
        """A context for aiohttp and urllib: members checked by the CA, our cert shown."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        """The same for the gRPC channel."""
        import grpc  # (here: a SQLite-only process never loads grpc)

        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes(),
            private_key=self.key_file.read_bytes(),
            certificate_chain=self.cert_file.read_bytes())


def client_tls_in(directory: Path) -> EtcdClientTLS:
    """The client files as `ops/etcdcerts.py` lays them out in `directory`."""
    return EtcdClientTLS(directory / "ca.pem", directory / "client.pem", directory / "client.key")
