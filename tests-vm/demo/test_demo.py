"""The quick trial works: the two profiles `madmail demo` prints links for
can be configured by a real Delta Chat client and chat with the padlock.

`MADMAIL_DEMO_LINKS` holds the demo's `dclogin:` links, one per line.
"""

import os

from deltachat_rpc_client import DeltaChat, EventType, Rpc


def test_demo_links_give_two_chatting_profiles(tmp_path):
    links = os.environ["MADMAIL_DEMO_LINKS"].split()
    assert len(links) == 2, links
    with Rpc(accounts_dir=str(tmp_path / "accounts")) as rpc:
        deltachat = DeltaChat(rpc)
        first, second = (deltachat.add_account() for _ in links)
        for account, link in zip((first, second), links):
            account.add_transport_from_qr(link)
            account.bring_online()
        first.create_contact(second).create_chat().send_text("hello from the demo")
        while True:
            event = second.wait_for_event()
            if event.kind == EventType.INCOMING_MSG:
                snapshot = second.get_message_by_id(event.msg_id).get_snapshot()
                assert snapshot.text == "hello from the demo"
                assert snapshot.show_padlock
                return
