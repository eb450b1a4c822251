"""A TLS-terminating tap between a Delta Chat profile and the relay's IMAP.

The profile connects to the tap (it accepts any certificate, `ic=3`); the
tap opens its own TLS connection to the relay and copies bytes both ways,
keeping what the client sent. That shows what the real client did inside
TLS, e.g. whether it switched on COMPRESS=DEFLATE (RFC 4978).
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import subprocess
import threading
import zlib
from pathlib import Path

from support import Relay, insecure_tls

# Client bytes kept per connection: enough for the commands of a session.
MAX_RECORDED = 1024 * 1024
COMPRESS_COMMAND = re.compile(rb"^(\S+) COMPRESS DEFLATE\r\n", re.M | re.I)


class ImapTap:
    """Listens on a free 127.0.0.1 port; see the module docs."""

    def __init__(self, relay: Relay, workdir: Path):
        cert, key = workdir / "tap-cert.pem", workdir / "tap-key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
            + ["-nodes", "-subj", "/CN=tap.invalid", "-days", "1", "-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
        )
        self.server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_tls.load_cert_chain(cert, key)
        # Delta Chat asks for ALPN `imap` on ports other than 993.
        self.server_tls.set_alpn_protocols(["imap"])
        self.relay = relay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        # What each client connection sent, in order.
        self.sent: list[bytearray] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        with contextlib.suppress(OSError):
            self.listener.close()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket):
        record = bytearray()
        with self.lock:
            self.sent.append(record)
        try:
            client = self.server_tls.wrap_socket(client, server_side=True)
            upstream = socket.create_connection((self.relay.host, self.relay.imaps_port), timeout=300)
            upstream = insecure_tls().wrap_socket(upstream, server_hostname=self.relay.host)
        except (OSError, ssl.SSLError):
            client.close()
            return
        threading.Thread(target=_copy, args=(upstream, client, None), daemon=True).start()
        _copy(client, upstream, record)

    def compressed_sessions(self) -> list[bytes]:
        """For every connection on which the client sent `COMPRESS DEFLATE`:
        what it sent afterwards, inflated (raw deflate, RFC 4978 §3).
        Raises zlib.error if those bytes are not deflate data."""
        with self.lock:
            records = [bytes(record) for record in self.sent]
        sessions = []
        for record in records:
            match = COMPRESS_COMMAND.search(record)
            if match:
                inflate = zlib.decompressobj(wbits=-15)
                sessions.append(inflate.decompress(record[match.end() :]))
        return sessions


def _copy(source: socket.socket, target: socket.socket, record: bytearray | None):
    """Copies until either side closes; appends what passed to `record`."""
    try:
        while chunk := source.recv(65536):
            if record is not None and len(record) < MAX_RECORDED:
                record.extend(chunk)
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
