"""Relay parameters and helpers shared by the scenarios.

Everything about the relay under test comes from environment variables, so
the same scenarios run against a relay on loopback (`cargo xtask e2e`) or in
a VM. See tests-vm/README.md for the list.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import ipaddress
import queue as queue_module
import json
import os
import re
import secrets
import smtplib
import ssl
import string
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Optional

from deltachat_rpc_client import Account, AttrDict, EventType, Message, SpecialContactId

# Local parts and passwords the relay accepts for new accounts (docs/specifications.md §1).
LOCALPART_ALPHABET = string.ascii_lowercase + string.digits
PASSWORD_LENGTH = 20
# Events worth printing while waiting: pytest shows them when a test fails.
NOTEWORTHY_EVENTS = {EventType.ERROR, EventType.WARNING, EventType.MSG_FAILED}


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class Relay:
    """Where the relay under test is and how to reach it."""

    # Mail domain: a DNS name or an IPv4 address.
    domain: str
    # Host the clients connect to (may differ from the domain on loopback).
    host: str
    imaps_port: int
    submissions_port: int
    # STARTTLS ports; None when the relay does not listen on them.
    imap_port: Optional[int]
    submission_port: Optional[int]
    # Full URL of the account-creation endpoint.
    new_url: str
    # Length of invented local parts (the relay's username limits).
    localpart_length: int
    # Argument for `cmping`, or None to skip that scenario.
    cmping_relay: Optional[str]

    # The relay's log file (only when the runner knows it), for scenarios
    # that check what the relay did.
    log_path: Optional[str] = None
    # HTTPS port; IMAP and submission are also reachable on it by ALPN.
    https_port: int = 443
    # What the relay publishes as server METADATA, when the runner says so.
    admin: Optional[str] = None
    comment: Optional[str] = None
    turn_host: Optional[str] = None
    turn_port: Optional[int] = None
    # An address of this machine the relay's TURN server may relay to
    # (where coturn's echo peer listens).
    turn_peer: str = "127.0.0.1"
    # The iroh relay URL the relay publishes, and its metrics endpoint.
    iroh_url: Optional[str] = None
    metrics_url: Optional[str] = None
    # The Shadowsocks proxy's port, when the runner enabled it (its link is
    # on the index page).
    proxy_port: Optional[int] = None
    # Whether the relay runs in no-log mode.
    no_log: bool = False
    # Whether the admin API is on, and the relay's configuration file (its
    # state directory holds the API token).
    admin_api: bool = False
    config_path: Optional[str] = None

    @classmethod
    def from_env(cls, prefix: str = "MADMAIL") -> "Relay":
        """The relay described by `<prefix>_*` variables (`MADMAIL2` for a second one)."""

        def env(name: str, default=None):
            return os.environ.get(f"{prefix}_{name}") or default

        domain = env("DOMAIN", "_madmail.test")
        host = env("HOST", domain)
        https_port = int(env("HTTPS_PORT", 443))
        optional = {name: int(env(name)) if env(name) else None for name in ("IMAP_PORT", "SUBMISSION_PORT")}
        return cls(
            domain=domain,
            host=host,
            imaps_port=int(env("IMAPS_PORT", 993)),
            submissions_port=int(env("SUBMISSIONS_PORT", 465)),
            imap_port=optional["IMAP_PORT"],
            submission_port=optional["SUBMISSION_PORT"],
            new_url=env("NEW_URL", f"https://{host}:{https_port}/new"),
            localpart_length=int(env("LOCALPART_LENGTH", 9)),
            cmping_relay=env("CMPING_RELAY"),
            log_path=env("LOG"),
            https_port=https_port,
            admin=env("ADMIN"),
            comment=env("COMMENT"),
            turn_host=env("TURN_HOST"),
            turn_port=int(env("TURN_PORT")) if env("TURN_PORT") else None,
            turn_peer=env("TURN_PEER", "127.0.0.1"),
            iroh_url=env("IROH_URL"),
            metrics_url=env("METRICS_URL"),
            proxy_port=int(env("PROXY_PORT")) if env("PROXY_PORT") else None,
            no_log=env("NO_LOG") == "1",
            admin_api=env("ADMIN_API") == "1",
            config_path=env("CONFIG"),
        )

    @property
    def self_signed(self) -> bool:
        """IP-address and `_`-prefixed domains get a self-signed certificate."""
        return _is_ip(self.domain) or self.domain.startswith("_")

    def address(self, localpart: str) -> str:
        """`user@domain`, or `user@[1.2.3.4]` on an IP-only relay."""
        if _is_ip(self.domain):
            return f"{localpart}@[{self.domain}]"
        return f"{localpart}@{self.domain}"

    def new_credentials(self) -> tuple[str, str]:
        """A fresh address and password that a first login turns into an account."""
        localpart = "".join(secrets.choice(LOCALPART_ALPHABET) for _ in range(self.localpart_length))
        password = "".join(secrets.choice(LOCALPART_ALPHABET) for _ in range(PASSWORD_LENGTH))
        return self.address(localpart), password

    def dclogin(
        self,
        address: str,
        password: str,
        only_port: Optional[int] = None,
        imap_at: Optional[tuple[str, int]] = None,
    ) -> str:
        """A `dclogin:` link with explicit TLS endpoints on this relay.

        `ic=3` accepts the self-signed certificate; no plaintext ports are used.
        `only_port` puts IMAP and SMTP on that one implicit-TLS port (443:
        the client then asks for them by ALPN); `imap_at` (host, port) sends
        IMAP elsewhere (a tap in front of the relay).
        """
        imap_host, imap_port = imap_at or (self.host, only_port or self.imaps_port)
        params = {
            "p": password,
            "v": "1",
            "ih": imap_host,
            "ip": str(imap_port),
            "is": "ssl",
            "sh": self.host,
            "sp": str(only_port or self.submissions_port),
            "ss": "ssl",
            "ic": "3",
        }
        query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        return f"dclogin:{urllib.parse.quote(address, safe='@[]')}/?{query}"

    def post_new(self) -> dict:
        """`POST /new`; returns the decoded JSON reply."""
        request = urllib.request.Request(self.new_url, data=b"", method="POST")
        with urllib.request.urlopen(request, context=insecure_tls(), timeout=30) as reply:
            assert reply.status == 200, reply.status
            return json.loads(reply.read(64 * 1024))


@contextlib.contextmanager
def imap_login(relay: Relay, address: str, password: str):
    """A logged-in `imaplib` session over implicit TLS (certificate not checked)."""
    imap = imaplib.IMAP4_SSL(relay.host, relay.imaps_port, ssl_context=insecure_tls(), timeout=30)
    try:
        # Quoted: `user@[1.2.3.4]` is no IMAP atom (RFC 9051 §4.1).
        imap.login(f'"{address}"', password)
        yield imap
    finally:
        with contextlib.suppress(Exception):
            imap.logout()


# Commands `imaplib` does not know (RFC 5464 §4), for `metadata`.
imaplib.Commands.setdefault("GETMETADATA", ("AUTH", "SELECTED"))
imaplib.Commands.setdefault("SETMETADATA", ("AUTH", "SELECTED"))


def metadata(imap: imaplib.IMAP4, command: str, *args: str) -> tuple[str, str, dict]:
    """Runs GETMETADATA or SETMETADATA; returns the tagged status and text and
    the entries of the untagged METADATA replies (`None` for NIL)."""
    status, data = imap._simple_command(command, *args)
    text = data[-1].decode() if data and isinstance(data[-1], bytes) else str(data)
    _, untagged = imap._untagged_response(status, data, "METADATA")
    flat = ""
    for item in untagged:
        if item is None:
            continue
        if isinstance(item, tuple):
            # A literal value: `{n}` ends the line, the bytes follow.
            prefix, literal = item
            flat += re.sub(rb"\{\d+\}$", b"", prefix).decode() + '"' + literal.decode() + '"'
        else:
            flat += item.decode() + "\n"
    entries = {}
    for key, quoted, nil in re.findall(r'(/[\w/.-]+)\s+(?:"((?:[^"\\]|\\.)*)"|(NIL))', flat):
        entries[key.lower()] = None if nil else re.sub(r"\\(.)", r"\1", quoted)
    return status, text, entries


def https_get(relay: Relay, path: str, host_header: Optional[str] = None) -> tuple[int, str, str]:
    """`GET https://HOST:HTTPS_PORT/path`: status, content type and body text."""
    url = f"https://{relay.host}:{relay.https_port}{path}"
    headers = {"Host": host_header} if host_header else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, context=insecure_tls(), timeout=30) as reply:
            body = reply.read(1024 * 1024).decode()
            return reply.status, reply.headers.get("Content-Type", ""), body
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read(64 * 1024).decode(errors="replace")


def admin_token(relay: Relay) -> str:
    """The admin API token: the hex form of `<state_dir>/admin.key`."""
    import tomllib

    with open(relay.config_path, "rb") as config:
        state_dir = tomllib.load(config).get("state_dir", "/var/lib/madmail")
    with open(os.path.join(state_dir, "admin.key"), "rb") as key:
        return key.read().hex()


def admin_call(relay: Relay, method: str, resource: str, body=None, token: Optional[str] = None) -> dict:
    """One admin API request; returns the reply envelope (HTTP is always 200)."""
    envelope = {
        "method": method,
        "resource": resource,
        "headers": {"Authorization": f"Bearer {token or admin_token(relay)}"},
        "body": body,
    }
    url = f"https://{relay.host}:{relay.https_port}/api/admin"
    request = urllib.request.Request(url, data=json.dumps(envelope).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, context=insecure_tls(), timeout=30) as reply:
        assert reply.status == 200, reply.status
        return json.loads(reply.read())


def metric(url: str, series: str) -> float:
    """The value of `series` on the relay's metrics endpoint."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == series:
            return float(value)
    raise AssertionError(f"no {series} in the metrics")


def insecure_tls() -> ssl.SSLContext:
    """TLS context for raw-protocol probes of a self-signed relay."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def next_event(account: Account, deadline: float):
    """The account's next event, or an AssertionError once the deadline passed."""
    remaining = deadline - time.monotonic()
    assert remaining > 0, "timed out waiting for a Delta Chat event"
    queue = account._rpc.get_queue(account.id)
    try:
        event = queue.get(timeout=remaining)
    except queue_module.Empty as err:
        raise AssertionError("timed out waiting for a Delta Chat event") from err
    event = AttrDict(event)
    if event.kind in NOTEWORTHY_EVENTS:
        print(f"account {account.id}: {event.kind}: {event.get('msg')}")
    return event


def wait_for_text(account: Account, text: str, timeout: float = 90) -> Message:
    """Consume events until an incoming message with exactly `text` arrives.

    Messages in contact-request chats after the first one raise only
    `MsgsChanged`, so that event counts too.
    """
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        try:
            event = next_event(account, deadline)
        except AssertionError as err:
            raise AssertionError(f"no message {text!r} arrived; saw {seen!r}") from err
        if event.kind not in (EventType.INCOMING_MSG, EventType.MSGS_CHANGED) or not event.get("msg_id"):
            continue
        message = account.get_message_by_id(event.msg_id)
        snapshot = message.get_snapshot()
        if snapshot.from_id == SpecialContactId.SELF:
            continue
        if snapshot.text == text:
            return message
        seen.append(snapshot.text)


def wait_for_download(message: Message, timeout: float = 90):
    """Poll until the message is fully downloaded; returns its snapshot."""
    deadline = time.monotonic() + timeout
    while True:
        snapshot = message.get_snapshot()
        if snapshot.download_state == "Done" and snapshot.file:
            return snapshot
        assert time.monotonic() < deadline, f"download not done: {snapshot.download_state}"
        time.sleep(0.2)


def accept_chat_of(message: Message):
    """Accept the (contact-request) chat a message arrived in and return it."""
    chat = message.account.get_chat_by_id(message.get_snapshot().chat_id)
    chat.accept()
    return chat


def wait_for_incoming(account: Account, timeout: float = 90) -> Message:
    """Consume events until any message arrives and return it."""
    deadline = time.monotonic() + timeout
    while True:
        event = next_event(account, deadline)
        if event.kind == EventType.INCOMING_MSG:
            return account.get_message_by_id(event.msg_id)


def accepted_chat(sender: Account, receiver: Account):
    """A one-to-one chat from `sender` to `receiver`, already accepted by both."""
    receiver.create_chat(sender)
    return sender.create_chat(receiver)


def _packet(tag: int, body: bytes) -> bytes:
    """An OpenPGP packet with a new-format header and a 5-octet length (RFC 9580 §4.2)."""
    return bytes([0xC0 | tag, 0xFF]) + len(body).to_bytes(4, "big") + body


def _armored_packets(payload: int) -> str:
    """ASCII armor (RFC 9580 §6.2) of a PKESK (v3, RSA, random MPI) and a SEIPD (v1)
    holding `payload` random bytes: the shape the gate accepts (docs/specifications.md §2)."""
    mpi = bytes([0x80]) + secrets.token_bytes(255)
    pkesk = bytes([3]) + secrets.token_bytes(8) + bytes([1]) + (2048).to_bytes(2, "big") + mpi
    seipd = bytes([1]) + secrets.token_bytes(max(payload, 32))
    text = base64.b64encode(_packet(1, pkesk) + _packet(18, seipd)).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "-----BEGIN PGP MESSAGE-----\r\n\r\n" + "\r\n".join(lines) + "\r\n-----END PGP MESSAGE-----\r\n"


def encrypted_message(sender: str, recipient: str, size: int, message_id: str) -> bytes:
    """An encrypted-shaped message (RFC 3156 `multipart/encrypted`) of about `size`
    bytes (within a few hundred) with the given Message-ID. The relay never
    decrypts, so random packet contents pass its gate like real ones."""

    def build(payload: int) -> bytes:
        return (
            f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: [...]\r\n"
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
            f"Message-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
            '\tboundary="b1"\r\n\r\n'
            "--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
            '--b1\r\nContent-Type: application/octet-stream; name="encrypted.asc"\r\n\r\n'
            f"{_armored_packets(payload)}\r\n--b1--\r\n"
        ).encode()

    # Armor grows by 4/3 and a line end per 64 characters: about 1.375 bytes per byte.
    payload = max(size - len(build(0)), 0) * 64 // 88
    return build(payload)


def submit(relay: Relay, sender: str, password: str, recipient: str, message: bytes):
    """Submits `message` over implicit TLS; returns (code, text) of the first refusal,
    or (250, "") when the message was accepted. smtplib sends `SIZE=`, so the relay
    can refuse a recipient over quota at `RCPT` (RFC 1870)."""
    with smtplib.SMTP_SSL(relay.host, relay.submissions_port, context=insecure_tls(), timeout=60) as smtp:
        smtp.login(sender, password)
        try:
            smtp.sendmail(sender, [recipient], message)
        except smtplib.SMTPRecipientsRefused as refused:
            code, text = refused.recipients[recipient]
            return code, text.decode(errors="replace")
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as refused:
            return refused.smtp_code, refused.smtp_error.decode(errors="replace")
    return 250, ""


def inbox(relay: Relay, address: str, password: str) -> dict[str, dict]:
    """The INBOX of an account by Message-ID: uid, size, internal date (Unix time) and flags.
    Logging in counts as activity for the account (docs/specifications.md §5)."""
    with imap_login(relay, address, password) as imap:
        status, data = imap.select("INBOX", readonly=True)
        assert status == "OK", data
        if int(data[0]) == 0:
            return {}
        status, data = imap.uid(
            "FETCH", "1:*", "(UID RFC822.SIZE INTERNALDATE FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"
        )
        assert status == "OK", data
    messages = {}
    for index, item in enumerate(data):
        if not isinstance(item, tuple):
            continue
        # Items after the literal come as the next element, e.g. b" FLAGS (...))".
        after = data[index + 1] if index + 1 < len(data) and isinstance(data[index + 1], bytes) else b""
        raw_meta = item[0] + after
        meta, header = raw_meta.decode(), item[1].decode()
        message_id = re.search(r"(?im)^message-id:\s*(\S+)", header).group(1)
        flags = re.search(r"FLAGS \(([^)]*)\)", meta).group(1)
        messages[message_id] = {
            "uid": int(re.search(r"UID (\d+)", meta).group(1)),
            "size": int(re.search(r"RFC822\.SIZE (\d+)", meta).group(1)),
            "date": time.mktime(imaplib.Internaldate2tuple(raw_meta)),
            "flags": flags.split(),
        }
    return messages


def mark_seen(relay: Relay, address: str, password: str, uids: list[int]):
    """Sets `\\Seen` on the given messages of the account's INBOX."""
    with imap_login(relay, address, password) as imap:
        imap.select("INBOX")
        for uid in uids:
            status, data = imap.uid("STORE", str(uid), "+FLAGS", "(\\Seen)")
            assert status == "OK", data
