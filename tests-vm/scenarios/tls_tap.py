"""A TLS-terminating tap between a Delta Chat profile and the relay's IMAP.

The profile connects to the tap (it accepts any certificate, `ic=3`); the
tap opens its own TLS connection to the relay and copies bytes both ways,
keeping what the client sent. That shows what the real client did inside
TLS, e.g. whether it switched on COMPRESS=DEFLATE (RFC 4978).

Both directions of a connection run on one asyncio event loop (in a thread
of its own): an OpenSSL connection must not be read and written from two
threads at once, which is what a thread per direction would do.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import subprocess
import threading
import zlib
from pathlib import Path

from support import Relay, insecure_tls

# Client bytes kept per connection: enough for the commands of a session.
MAX_RECORDED = 1024 * 1024
COMPRESS_COMMAND = re.compile(rb"^(\S+) COMPRESS DEFLATE\r\n", re.M | re.I)
# Seconds the tap waits for its loop to start or stop.
LOOP_TIMEOUT = 10


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
        # What each client connection sent, in order.
        self.sent: list[bytearray] = []
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.server = self._run(
            asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.server_tls)
        )
        self.port = self.server.sockets[0].getsockname()[1]

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(LOOP_TIMEOUT)

    def close(self):
        """Stops listening and ends the open connections."""

        async def stop():
            self.server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        with contextlib.suppress(Exception):
            self._run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter):
        record = bytearray()
        with self.lock:
            self.sent.append(record)
        try:
            relay_reader, relay_writer = await asyncio.open_connection(
                self.relay.host, self.relay.imaps_port, ssl=insecure_tls(), server_hostname=self.relay.host
            )
        except (OSError, ssl.SSLError):
            client_writer.close()
            return
        writers = (client_writer, relay_writer)
        await asyncio.gather(
            _copy(relay_reader, client_writer, None, writers),
            _copy(client_reader, relay_writer, record, writers),
        )

    def summary(self) -> str:
        """The commands (tag and name only) the client sent on each
        connection before any COMPRESS, for failure messages."""
        with self.lock:
            records = [bytes(record) for record in self.sent]
        lines = []
        for number, record in enumerate(records):
            match = COMPRESS_COMMAND.search(record)
            clear = record[: match.end()] if match else record
            commands = [b" ".join(line.split()[:2]) for line in clear.splitlines() if len(line.split()) > 1]
            lines.append(f"connection {number}: {b' | '.join(commands)[:400]!r}{' + compressed' if match else ''}")
        return "\n".join(lines) or "no connection"

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


async def _copy(
    source: asyncio.StreamReader,
    target: asyncio.StreamWriter,
    record: bytearray | None,
    writers: tuple[asyncio.StreamWriter, ...],
):
    """Copies until either side closes; appends what passed to `record`.
    Then closes both connections, which also ends the other direction."""
    try:
        while chunk := await source.read(65536):
            if record is not None and len(record) < MAX_RECORDED:
                record.extend(chunk)
            target.write(chunk)
            await target.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        for writer in writers:
            writer.close()
