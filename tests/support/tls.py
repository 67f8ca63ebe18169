"""A redis-server that speaks only TLS and knows only ACL users, for the suite.

Certificates come from ``trustme``: a throwaway CA signs a server certificate
for 127.0.0.1 and localhost. The plain port is off (``--port 0``) and the
``default`` user is disabled, so every client needs TLS and a username/password.
"""

from __future__ import annotations

import socket
import ssl
import tempfile
from pathlib import Path

import trustme

from tests.support.servers import RedisServer, free_port

USERNAME = "cache"
PASSWORD = "cache-secret"
READONLY_USERNAME = "reader"
READONLY_PASSWORD = "reader-secret"


class Certificates:
    """A CA and a server certificate written as PEM files."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="redis-tls-"))
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = self.dir / "ca.pem"
        self.cert_file = self.dir / "server.pem"
        self.key_file = self.dir / "server.key"
        ca.cert_pem.write_to_path(str(self.ca_file))
        server.cert_chain_pems[0].write_to_path(str(self.cert_file))
        server.private_key_pem.write_to_path(str(self.key_file))


class TlsRedisServer(RedisServer):
    """redis-server with a TLS port only and ACL users ``cache`` (all) and ``reader``."""

    def __init__(self, certificates: Certificates) -> None:
        self.certificates = certificates
        port = free_port()
        super().__init__(
            port=port,
            extra_args=[
                "--port",
                "0",
                "--tls-port",
                str(port),
                "--tls-cert-file",
                str(certificates.cert_file),
                "--tls-key-file",
                str(certificates.key_file),
                "--tls-ca-cert-file",
                str(certificates.ca_file),
                "--tls-auth-clients",
                "no",
                *("--user", "default", "off"),
                *("--user", USERNAME, "on", f">{PASSWORD}", "~*", "&*", "+@all"),
                *("--user", READONLY_USERNAME, "on", f">{READONLY_PASSWORD}", "~*", "+@read"),
            ],
        )

    def ping(self) -> bool:
        """The TLS handshake succeeds and the server asks for credentials."""
        context = ssl.create_default_context(cafile=str(self.certificates.ca_file))
        try:
            with (
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
            ):
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"-NOAUTH")
        except OSError:
            return False
