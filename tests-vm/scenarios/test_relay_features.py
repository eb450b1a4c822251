"""Relay features beyond carrying messages: port 443 by ALPN, COMPRESS,
server METADATA (TURN, admin), push device tokens and the web pages."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ElementTree
import zlib

import pytest

from support import accept_chat_of, https_get, imap_login, insecure_tls, metadata, wait_for_text
from tls_tap import ImapTap

# Default `limits.max_mailbox_size` and `max_message_size` (docs/specifications.md §5).
DEFAULT_MAILBOX_SIZE = "500 MiB"
DEFAULT_MESSAGE_SIZE = "30 MiB"
# `turn.credential_lifetime` default (about 5 days) plus clock slack.
TURN_LIFETIME_LIMIT = 5 * 24 * 3600 + 120


def test_profile_on_port_443_only_exchanges_encrypted_messages(relay, make_profiles):
    (on443,) = make_profiles(1, only_port=relay.https_port)
    (peer,) = make_profiles(1)
    transport = on443._rpc.list_transports(on443.id)[0]
    assert (transport["imapPort"], transport["smtpPort"]) == (relay.https_port, relay.https_port), transport

    on443.create_chat(peer).send_text("sent over 443")
    received = wait_for_text(peer, "sent over 443")
    assert received.get_snapshot().show_padlock
    accept_chat_of(received).send_text("received over 443")
    reply = wait_for_text(on443, "received over 443")
    assert reply.get_snapshot().show_padlock


class DeflateImap:
    """A raw IMAP client over implicit TLS that can switch on COMPRESS=DEFLATE
    (RFC 4978: raw deflate both ways, a sync flush after every command)."""

    def __init__(self, relay):
        raw = socket.create_connection((relay.host, relay.imaps_port), timeout=30)
        self.sock = insecure_tls().wrap_socket(raw, server_hostname=relay.host)
        self.deflate = None
        self.inflate = None
        self.pending = b""
        self.tag = 0
        assert self.line().startswith(b"* OK")

    def start_compression(self):
        self.deflate = zlib.compressobj(wbits=-15)
        self.inflate = zlib.decompressobj(wbits=-15)
        # Bytes already read after the OK were compressed by the server.
        self.pending = self.inflate.decompress(self.pending)

    def send(self, data: bytes):
        if self.deflate:
            data = self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.pending:
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed; pending {self.pending!r}"
            self.pending += self.inflate.decompress(chunk) if self.inflate else chunk
        line, self.pending = self.pending.split(b"\r\n", 1)
        return line

    def command(self, text: str) -> tuple[bytes, list[bytes]]:
        """Sends a command; returns its tagged reply and the untagged lines."""
        self.tag += 1
        tag = f"z{self.tag}".encode()
        self.send(tag + b" " + text.encode() + b"\r\n")
        untagged = []
        while not (line := self.line()).startswith(tag + b" "):
            untagged.append(line)
        return line[len(tag) + 1 :], untagged


def test_compress_deflate_carries_a_whole_session(relay):
    address, password = relay.new_credentials()
    client = DeflateImap(relay)
    reply, _ = client.command(f'LOGIN "{address}" "{password}"')
    assert reply.startswith(b"OK"), reply
    assert b"COMPRESS=DEFLATE" in reply.upper() or b"COMPRESS=DEFLATE" in b" ".join(client.command("CAPABILITY")[1])

    reply, _ = client.command("COMPRESS DEFLATE")
    assert reply.startswith(b"OK"), reply
    client.start_compression()
    reply, untagged = client.command("SELECT INBOX")
    assert reply.startswith(b"OK"), reply
    assert b"* 0 EXISTS" in untagged, untagged
    assert any(b"UIDVALIDITY" in line for line in untagged), untagged
    reply, _ = client.command("NOOP")
    assert reply.startswith(b"OK"), reply
    # RFC 4978 §3: a second COMPRESS is refused, the session stays usable.
    reply, _ = client.command("COMPRESS DEFLATE")
    assert reply.startswith(b"NO [COMPRESSIONACTIVE]"), reply
    reply, untagged = client.command("LOGOUT")
    assert reply.startswith(b"OK") and untagged[0].startswith(b"* BYE"), (reply, untagged)


def test_delta_chat_switches_on_compression_and_keeps_working(relay, deltachat, make_profiles, tmp_path):
    tap = ImapTap(relay, tmp_path)
    try:
        tapped = deltachat.add_account()
        tapped.set_config("autorelay", "0")
        address, password = relay.new_credentials()
        tapped.add_transport_from_qr(relay.dclogin(address, password, imap_at=("127.0.0.1", tap.port)))
        tapped.bring_online()
        (peer,) = make_profiles(1)
        peer.create_chat(tapped).send_text("through a compressed session")
        try:
            received = wait_for_text(tapped, "through a compressed session")
        except AssertionError as err:
            raise AssertionError(f"{err}; through the tap:\n{tap.summary()}") from err
        assert received.get_snapshot().show_padlock
        sessions = tap.compressed_sessions()
    finally:
        tap.close()
    assert len(tap.sent) >= 1, "the client never connected through the tap"
    assert sessions, "Delta Chat never sent COMPRESS DEFLATE"
    # After COMPRESS the client keeps talking, in deflate: the inflated
    # commands are the ordinary ones of its IMAP loop.
    assert any(re.search(rb"^\S+ (UID FETCH|SELECT|IDLE|GETMETADATA)", s, re.M) for s in sessions), sessions


def test_delta_chat_gets_our_turn_server_as_ice_server(relay, make_profiles):
    if not relay.turn_host:
        pytest.skip("MADMAIL_TURN_HOST not set: the relay publishes no TURN entry")
    # Caller and callee: both must be handed the relay's own TURN server.
    profiles = make_profiles(2)
    wanted = f"turn:{relay.turn_host}:{relay.turn_port}"
    for profile in profiles:
        # The core reads the server METADATA once its IMAP loop is connected.
        deadline = time.monotonic() + 60
        while True:
            servers = profile.ice_servers()
            ours = [server for server in servers if wanted in str(server.get("urls"))]
            if ours or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert ours, f"{wanted} not among the ICE servers {servers!r}"
        username = int(ours[0]["username"])
        now = time.time()
        assert now < username < now + TURN_LIFETIME_LIMIT, (username, now)
        assert ours[0]["credential"], ours[0]
        if shutil.which("turnutils_uclient"):
            assert_turn_relays(relay, ours[0]["username"], ours[0]["credential"])


def assert_turn_relays(relay, username: str, credential: str) -> None:
    """coturn's client relays 20 messages through the relay's TURN server
    to coturn's echo peer with the credential Delta Chat was given."""
    with socket.socket() as probe:
        probe.bind((relay.turn_peer, 0))
        peer_port = probe.getsockname()[1]
    peer = subprocess.Popen(
        ["turnutils_peer", "-L", relay.turn_peer, "-p", str(peer_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.2)
        run = subprocess.run(
            ["turnutils_uclient", "-e", relay.turn_peer, "-r", str(peer_port), "-u", username, "-w", credential,
             "-p", str(relay.turn_port), "-n", "20", "-l", "120", "-z", "5", "-c", relay.turn_host],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        peer.kill()
        peer.wait()
    output = run.stdout + run.stderr
    totals = [line for line in output.splitlines() if "tot_recv_msgs=" in line]
    assert totals and "tot_recv_msgs=20" in totals[-1], output


def test_server_metadata_names_admin_comment_and_turn(relay):
    if not relay.admin:
        pytest.skip("MADMAIL_ADMIN not set")
    address, password = relay.new_credentials()
    keys = ["/shared/admin", "/shared/comment", "/shared/vendor/deltachat/turn", "/shared/nothing/here"]
    with imap_login(relay, address, password) as imap:
        status, reply, values = metadata(imap, "GETMETADATA", '""', "(" + " ".join(keys) + ")")
    assert (status, reply) == ("OK", "Getmetadata completed"), (status, reply)
    assert values["/shared/admin"] == f"mailto:{relay.admin}"
    assert values["/shared/comment"] == relay.comment
    assert values.get("/shared/nothing/here") is None
    if relay.turn_host:
        host, port, username, credential = values["/shared/vendor/deltachat/turn"].split(":")
        assert (host, int(port)) == (relay.turn_host, relay.turn_port)
        assert time.time() < int(username) < time.time() + TURN_LIFETIME_LIMIT
        assert credential


def test_device_tokens_add_up_as_in_the_chatmail_sequence(relay):
    address, password = relay.new_credentials()
    get = ("GETMETADATA", "INBOX", "/private/devicetoken")
    with imap_login(relay, address, password) as imap:
        for token, expected in (("1111", "1111"), ("2222", "1111 2222")):
            status, reply, _ = metadata(imap, "SETMETADATA", "INBOX", f'(/private/devicetoken "{token}")')
            assert (status, reply) == ("OK", "Setmetadata completed"), (status, reply)
            status, reply, values = metadata(imap, *get)
            assert (status, reply) == ("OK", "Getmetadata completed"), (status, reply)
            assert values["/private/devicetoken"] == expected
    # Tokens belong to the account, not to the connection.
    with imap_login(relay, address, password) as imap:
        assert metadata(imap, *get)[2]["/private/devicetoken"] == "1111 2222"


def test_index_page_shows_an_svg_account_qr_code(relay):
    status, content_type, body = https_get(relay, "/")
    assert status == 200 and content_type.startswith("text/html"), (status, content_type)
    assert re.search(r"<svg[^>]*>.*<(path|rect)", body, re.S), body[:500]
    assert "<script" not in body.lower()
    scheme = "dclogin:" if relay.self_signed else "dcaccount:"
    assert scheme in body.lower(), body[:500]


def test_info_page_shows_the_limits(relay):
    status, _, body = https_get(relay, "/info")
    assert status == 200
    for label, value in (
        ("Storage per account", DEFAULT_MAILBOX_SIZE),
        ("Largest message", DEFAULT_MESSAGE_SIZE),
        ("Messages deleted after", "20 days"),
    ):
        assert re.search(rf"{label}</dt>\s*<dd>{value}</dd>", body), (label, value)


def test_privacy_page_and_robots_txt(relay):
    status, _, body = https_get(relay, "/privacy")
    assert status == 200 and "IP addresses" in body
    status, content_type, body = https_get(relay, "/robots.txt")
    assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
    lines = [line.strip() for line in body.splitlines()]
    assert "User-agent: *" in lines and "Disallow: /" in lines, body


@pytest.mark.parametrize("path", ["/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"])
def test_autoconfig_lists_six_tls_servers(relay, path):
    status, content_type, body = https_get(relay, path)
    assert status == 200 and "xml" in content_type, (status, content_type)
    provider = ElementTree.fromstring(body).find("emailProvider")
    servers = {
        (kind, server.get("type"), int(server.findtext("port")), server.findtext("socketType"))
        for kind in ("incoming", "outgoing")
        for server in provider.findall(f"{kind}Server")
    }
    assert servers == {
        ("incoming", "imap", 993, "SSL"),
        ("incoming", "imap", 143, "STARTTLS"),
        ("incoming", "imap", 443, "SSL"),
        ("outgoing", "smtp", 465, "SSL"),
        ("outgoing", "smtp", 587, "STARTTLS"),
        ("outgoing", "smtp", 443, "SSL"),
    }
    everything = provider.findall("incomingServer") + provider.findall("outgoingServer")
    assert len(everything) == 6
    for server in everything:
        assert server.findtext("hostname") == relay.domain
        assert server.findtext("username") == "%EMAILADDRESS%"


def test_mta_sts_policy_is_served_for_the_mta_sts_host_only(relay):
    status, content_type, body = https_get(relay, "/.well-known/mta-sts.txt", f"mta-sts.{relay.domain}")
    assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
    policy = dict(line.split(": ", 1) for line in body.splitlines() if line)
    assert policy == {"version": "STSv1", "mode": "enforce", "mx": relay.domain, "max_age": "2419200"}
    status, _, _ = https_get(relay, "/.well-known/mta-sts.txt")
    assert status == 404
