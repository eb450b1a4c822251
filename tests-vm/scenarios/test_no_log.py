"""No-log mode (docs/specifications.md §8): after a full scenario the relay's log names
no address and no IP address.

Against a relay with logging on (`MADMAIL_NO_LOG` unset) the same scenario
must leave the addresses in the log: that shows the search finds what it
looks for, so an empty result in no-log mode means something.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import smtplib
import time

import pytest

from support import accept_chat_of, imap_login, insecure_tls, metadata, wait_for_text

# What must never appear in a no-log relay's log: IPv4 loopback addresses
# (all clients and relays of the runs use 127.0.0.x) and anything address-like.
FORBIDDEN = [re.compile(r"127\.0\.0\."), re.compile(r"@")]


def full_scenario(relay, make_profiles) -> list[str]:
    """Account creation by `/new` and by first login, messages both ways,
    a device token, failed logins; returns the addresses involved."""
    reply = relay.post_new()
    newbie, peer = make_profiles(credentials=[(reply["email"], reply["password"]), relay.new_credentials()])
    newbie.create_chat(peer).send_text("no-log ping")
    received = wait_for_text(peer, "no-log ping")
    accept_chat_of(received).send_text("no-log pong")
    wait_for_text(newbie, "no-log pong")

    address, password = relay.new_credentials()
    with imap_login(relay, address, password) as imap:
        status, _, _ = metadata(imap, "SETMETADATA", "INBOX", '(/private/devicetoken "4242")')
        assert status == "OK"
    with contextlib.suppress(imaplib.IMAP4.error):
        with imap_login(relay, address, "wrong" + password):
            pass
    with smtplib.SMTP_SSL(relay.host, relay.submissions_port, context=insecure_tls(), timeout=30) as smtp:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(address, "wrong" + password)
    return [reply["email"], peer.get_config("configured_addr"), address]


def relay_log(relay) -> str:
    # Give the relay a moment to write what the last connections caused.
    time.sleep(1)
    with open(relay.log_path, encoding="utf-8", errors="replace") as log:
        return log.read()


def test_no_log_relay_logs_no_address_after_a_full_scenario(relay, make_profiles):
    if not relay.log_path or not relay.no_log:
        pytest.skip("needs a no-log relay (MADMAIL_NO_LOG=1) and its log (MADMAIL_LOG)")
    addresses = full_scenario(relay, make_profiles)
    log = relay_log(relay)
    leaks = [address for address in addresses if address.split("@")[0] in log]
    leaks += [line for line in log.splitlines() if any(pattern.search(line) for pattern in FORBIDDEN)]
    assert not leaks, "the no-log relay logged:\n" + "\n".join(leaks)


def test_logging_relay_names_the_addresses_of_the_same_scenario(relay, make_profiles):
    if not relay.log_path or relay.no_log:
        pytest.skip("needs a relay with logging on and its log (MADMAIL_LOG)")
    addresses = full_scenario(relay, make_profiles)
    log = relay_log(relay)
    assert any(address in log for address in addresses), "logging relay names none of the addresses"
