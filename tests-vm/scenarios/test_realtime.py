"""The real-time side: two real Delta Chat profiles exchange webxdc
realtime data with the relay's own iroh relay as the only relay they know."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Optional

import pytest
from deltachat_rpc_client import EventType

from support import accepted_chat, metadata, metric, imap_login, next_event, wait_for_text

IROH_KEY = "/shared/vendor/deltachat/irohrelay"


def webxdc_app(directory: Path) -> Path:
    """A minimal webxdc app (a zip with a manifest and an index page)."""
    path = directory / "realtime.xdc"
    with zipfile.ZipFile(path, "w") as app:
        app.writestr("manifest.toml", 'name = "realtime check"\n')
        app.writestr("index.html", "<!doctype html><title>realtime</title><p>realtime</p>\n")
    return path


def realtime_data(account, msg_id: int, timeout: float) -> Optional[bytes]:
    """The next realtime data for the webxdc message `msg_id`, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            event = next_event(account, deadline)
        except AssertionError:
            return None
        if event.kind == EventType.WEBXDC_REALTIME_DATA and event.msg_id == msg_id:
            return bytes(event.data)
    return None


def send_until_received(sender_msg, receiver, receiver_msg_id: int, data: bytes) -> None:
    """Sends `data` on the realtime channel until the receiver gets it (the
    channel is joined asynchronously: early data may find nobody)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        sender_msg.send_webxdc_realtime_data(data)
        got = realtime_data(receiver, receiver_msg_id, 3)
        if got is not None:
            assert got == data
            return
    raise AssertionError(f"{data!r} never arrived over the realtime channel")


def test_webxdc_realtime_data_flows_through_our_iroh_relay(relay, make_profiles, tmp_path):
    if not relay.iroh_url:
        pytest.skip("MADMAIL_IROH_URL not set: the relay publishes no reachable iroh relay")
    alice, bob = make_profiles(2)
    address, password = relay.new_credentials()
    with imap_login(relay, address, password) as imap:
        _, _, values = metadata(imap, "GETMETADATA", '""', f"({IROH_KEY})")
    assert values[IROH_KEY] == relay.iroh_url
    accepted = metric(relay.metrics_url, "madmail_iroh_clients_accepted_total") if relay.metrics_url else 0
    for profile in (alice, bob):
        profile.set_config("webxdc_realtime_enabled", "1")

    chat = accepted_chat(alice, bob)
    sent = chat.send_message(text="realtime app", file=str(webxdc_app(tmp_path)))
    received = wait_for_text(bob, "realtime app")
    # Joining sends an advertisement (a message) naming the node and its
    # home relay, the one the relay published.
    received.send_webxdc_realtime_advertisement()
    sent.send_webxdc_realtime_advertisement()
    send_until_received(sent, bob, received.id, b"hello over iroh")
    send_until_received(received, alice, sent.id, b"and back")

    if relay.metrics_url:
        clients = metric(relay.metrics_url, "madmail_iroh_clients_accepted_total") - accepted
        assert clients >= 2, f"{clients} new iroh relay clients: both profiles must have connected"
