"""Real Delta Chat profiles exchanging end-to-end encrypted messages."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from support import accept_chat_of, accepted_chat, wait_for_download, wait_for_incoming, wait_for_text


def send_and_expect(chat, receiver, text: str):
    """Send `text` in `chat`; return the sent message and the receiver's copy."""
    sent = chat.send_text(text)
    received = wait_for_text(receiver, text)
    assert received.get_snapshot().show_padlock, f"{text!r} arrived without padlock"
    return sent, received


def test_profiles_from_dclogin_exchange_encrypted_texts_both_ways(make_profiles):
    alice, bob = make_profiles(2)
    chat = alice.create_chat(bob)

    sent, received = send_and_expect(chat, bob, "hello bob")
    assert sent.get_snapshot().show_padlock
    reply, _ = send_and_expect(accept_chat_of(received), alice, "hello alice")
    assert reply.get_snapshot().show_padlock


def test_account_from_post_new_sends_and_receives(relay, make_profiles):
    reply = relay.post_new()
    email, password = reply["email"], reply["password"]
    localpart = email.split("@")[0]
    assert re.fullmatch(r"[a-z0-9]+", localpart), email
    assert relay.address(localpart) == email
    assert len(password) >= 12

    newbie, peer = make_profiles(credentials=[(email, password), relay.new_credentials()])
    if relay.self_signed:
        parsed = newbie.check_qr(reply["dclogin_url"])
        assert parsed["kind"] == "login" and parsed["address"] == email

    _, received = send_and_expect(newbie.create_chat(peer), peer, "from a /new account")
    send_and_expect(accept_chat_of(received), newbie, "to a /new account")


def test_message_of_only_dots_arrives_intact(make_profiles):
    alice, bob = make_profiles(2)
    chat = accepted_chat(alice, bob)
    for text in [".", ".\n..\n.", "..."]:
        send_and_expect(chat, bob, text)


def test_one_megabyte_file_arrives_intact(make_profiles, tmp_path: Path):
    alice, bob = make_profiles(2)
    payload = os.urandom(1024 * 1024)
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)

    accepted_chat(alice, bob).send_file(str(path))
    snapshot = wait_for_download(wait_for_incoming(bob))

    assert snapshot.show_padlock
    assert snapshot.file_name == "payload.bin"
    received = Path(snapshot.file).read_bytes()
    assert len(received) == len(payload)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


def test_three_member_group_members_see_each_other(make_profiles):
    alice, bob, carol = make_profiles(3)
    group = alice.create_group("trio")
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
            received = wait_for_text(other, text)
            snapshot = received.get_snapshot()
            assert snapshot.show_padlock
            assert other.get_chat_by_id(snapshot.chat_id).get_basic_snapshot().name == "trio"
