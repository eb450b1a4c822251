"""Delta Chat profiles on two relays talking to each other (federation).

Profiles on the first relay (`MADMAIL_*`) and on the second (`MADMAIL2_*`)
chat 1:1, verify each other with a SecureJoin QR code and share a group.
Every scenario skips when `MADMAIL2_DOMAIN` is unset.

When `MADMAIL_FEDERATION_VIA` names a transport (`mxdeliv` or `smtp`) and
the relay logs are known (`MADMAIL_LOG`, `MADMAIL2_LOG`), each scenario also
checks in the logs that every relay sent its share of the traffic and that
only that transport carried it.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from deltachat_rpc_client import EventType

from support import Relay, accept_chat_of, next_event, wait_for_text

# The queue's line for each delivery attempt, e.g.
# `INFO outbound delivery attempt queue_id=3 domain="_relay2.test" via="smtp" ... delivered=1`.
ATTEMPT_LINE = "outbound delivery attempt"
VIA = re.compile(r'\bvia="?(\w+)')
DELIVERED = re.compile(r"\bdelivered=(\d+)")
# Progress value of a finished SecureJoin handshake.
SECUREJOIN_DONE = 1000


class DeliveryLog:
    """The outbound delivery attempts a relay logs from now on."""

    def __init__(self, relay: Relay):
        self.path = Path(relay.log_path) if relay.log_path else None
        self.offset = self.path.stat().st_size if self.path else 0

    def attempts(self) -> list[tuple[str, int]]:
        """`(transport, delivered recipients)` of every attempt since creation."""
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            text = log.read().decode("utf-8", "replace")
        found = []
        for line in text.splitlines():
            if ATTEMPT_LINE in line and (via := VIA.search(line)) and (count := DELIVERED.search(line)):
                found.append((via.group(1), int(count.group(1))))
        return found


@pytest.fixture
def carried_by(relay, relay2):
    """`carried_by(*senders)` asserts, for each sending relay, that its
    deliveries since the test started went over the expected transport only."""
    via = os.environ.get("MADMAIL_FEDERATION_VIA")
    logs = {relay.domain: DeliveryLog(relay), relay2.domain: DeliveryLog(relay2)}

    def check(*senders: Relay):
        if not via or any(logs[s.domain].path is None for s in senders):
            return
        for sender in senders:
            attempts = logs[sender.domain].attempts()
            delivered = [transport for transport, count in attempts if count > 0]
            assert delivered, f"{sender.domain} logged no successful delivery: {attempts}"
            assert set(delivered) == {via}, f"{sender.domain} delivered over {delivered}, expected only {via}"

    return check


def wait_for_progress(account, kind: str, timeout: float = 90):
    """Consume events until the SecureJoin progress event `kind` reports completion."""
    deadline = time.monotonic() + timeout
    while True:
        event = next_event(account, deadline)
        if event.kind == kind and event.progress == SECUREJOIN_DONE:
            return


def address_of(account) -> str:
    return account.self_contact.get_snapshot().address


def key_contact(account, address: str):
    """The account's key contact (one bound to an OpenPGP key) for `address`."""
    found = [c for c in account.get_contacts(snapshot=True) if c.address == address and c.is_key_contact]
    assert found, f"no key contact {address} among {account.get_contacts(snapshot=True)}"
    return found[0].contact


def fingerprint_in(encryption_info: str, address: str) -> str:
    """The fingerprint listed under `address` in a contact's encryption info."""
    match = re.search(rf"\({re.escape(address)}\):?\n((?:[0-9A-F]{{4}} ?)+\n(?:[0-9A-F]{{4}} ?)+)", encryption_info)
    assert match, f"no fingerprint of {address} in {encryption_info!r}"
    return match.group(1)


def send_and_expect(chat, receiver, text: str):
    """Send `text`; return the receiver's copy after checking its padlock."""
    sent = chat.send_text(text)
    received = wait_for_text(receiver, text)
    assert received.get_snapshot().show_padlock, f"{text!r} arrived without padlock"
    assert sent.get_snapshot().show_padlock
    return received


def test_one_to_one_chat_across_relays_is_encrypted_both_ways(make_profiles, relay, relay2, carried_by):
    alice, bob = make_profiles(on=[relay, relay2])
    assert address_of(alice).endswith(relay.address("x")[1:])
    assert address_of(bob).endswith(relay2.address("x")[1:])

    received = send_and_expect(alice.create_chat(bob), bob, "hello from the first relay")
    send_and_expect(accept_chat_of(received), alice, "hello from the second relay")
    carried_by(relay, relay2)


def test_securejoin_across_relays_verifies_both_contacts(make_profiles, relay, relay2, carried_by):
    alice, bob = make_profiles(on=[relay, relay2])
    qr = alice.get_qr_code()
    bob.secure_join(qr)
    wait_for_progress(alice, EventType.SECUREJOIN_INVITER_PROGRESS)
    wait_for_progress(bob, EventType.SECUREJOIN_JOINER_PROGRESS)

    # Both sides finished the handshake (progress 1000 is sent only after the
    # fingerprints from the QR code matched); each now holds the other's
    # actual key, not just any key.
    bob_seen_by_alice = key_contact(alice, address_of(bob))
    alice_seen_by_bob = key_contact(bob, address_of(alice))
    alice_view = bob_seen_by_alice.get_encryption_info()
    bob_view = alice_seen_by_bob.get_encryption_info()
    for address in (address_of(alice), address_of(bob)):
        assert fingerprint_in(alice_view, address) == fingerprint_in(bob_view, address)

    received = send_and_expect(bob_seen_by_alice.create_chat(), bob, "verified across relays")
    send_and_expect(bob.get_chat_by_id(received.get_snapshot().chat_id), alice, "verified reply")
    carried_by(relay, relay2)


def test_group_spanning_both_relays_reaches_every_member(make_profiles, relay, relay2, carried_by):
    alice, bob, carol = make_profiles(on=[relay, relay2, relay2])
    group = alice.create_group("two relays")
    group.add_contact(alice.create_contact(bob), alice.create_contact(carol))

    group.send_text("alice says hi")
    chats = {}
    for name, member in (("bob", bob), ("carol", carol)):
        received = wait_for_text(member, "alice says hi")
        assert received.get_snapshot().show_padlock
        chats[name] = accept_chat_of(received)

    for name, others in (("bob", (alice, carol)), ("carol", (alice, bob))):
        text = f"{name} says hi"
        chats[name].send_text(text)
        for other in others:
            snapshot = wait_for_text(other, text).get_snapshot()
            assert snapshot.show_padlock
            assert other.get_chat_by_id(snapshot.chat_id).get_basic_snapshot().name == "two relays"
    carried_by(relay, relay2)
