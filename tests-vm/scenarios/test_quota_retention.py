"""Quota, trim and retention (docs/specifications.md §5, §8) with a clock the test controls.

The relay under test runs under libfaketime: its wall clock is real time
plus the offset in `MADMAIL_FAKETIME_FILE`, which the library reads on every
clock call, so writing the file moves the running relay's clock (the
monotonic clock stays real, so timeouts keep working). Messages get their
internal date from that clock; `madmail expire` runs on the same clock
against the same state, standing in for the hourly expiry task, whose
first run right after start the `clock` fixture waits out.

Needs (set by `cargo xtask e2e` for its clock relay): `MADMAIL_FAKETIME_FILE`,
`MADMAIL_FAKETIME_LIB`, `MADMAIL_BIN`, `MADMAIL_CONFIG`, `MADMAIL_QUOTA` (the
relay's `limits.max_mailbox_size`, about a megabyte) and `MADMAIL_LOG`; the
retention rules are the defaults (20 days, seen messages over 200 kB after
7 days, accounts after 90 days without login). Skipped otherwise.

The clock only moves forward, and every test makes its own accounts, so
the tests do not depend on each other; what one leaves behind may be
counted by another's `madmail expire`, which is why those compare the
dry run with the real run rather than with fixed numbers.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from dataclasses import dataclass, field

import pytest
from deltachat_rpc_client import EventType

from support import encrypted_message, imap_login, inbox, mark_seen, next_event, submit

DAY = 86_400
HOUR = 3_600
# Default retention (docs/specifications.md §5).
DELETE_MAILS_AFTER = 20 * DAY
DELETE_LARGE_AFTER = 7 * DAY
LARGE = 200_000
INACTIVE_AFTER = 90 * DAY
# How far an internal date may be from the expected fake time.
CLOCK_SLACK = 120
# The relay's first expiry run is due this long after start.
FIRST_EXPIRY_WITHIN = 75


@dataclass
class Clock:
    """The clock relay's wall clock: real time plus `offset` seconds."""

    file: str
    library: str
    binary: str
    config: str
    offset: int = 0
    # What the relay was asked to do, for failure messages.
    history: list[str] = field(default_factory=list)

    def advance(self, seconds: int):
        """Moves the relay's clock forward (it never goes back)."""
        assert seconds > 0
        self.offset += seconds
        with open(self.file, "w", encoding="ascii") as out:
            out.write(f"+{self.offset}\n")
        self.history.append(f"clock +{self.offset / DAY:.2f} days")

    def now(self) -> float:
        """The relay's current time."""
        return time.time() + self.offset

    def madmail(self, *args: str) -> str:
        """Runs `madmail <command> --config <relay config> <rest>` on the relay's clock."""
        command, *rest = args
        env = dict(os.environ)
        env.update(
            LD_PRELOAD=self.library,
            FAKETIME_TIMESTAMP_FILE=self.file,
            FAKETIME_NO_CACHE="1",
            FAKETIME_DONT_FAKE_MONOTONIC="1",
        )
        done = subprocess.run(
            [self.binary, command, "--config", self.config, *rest],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"madmail {args}: {done.stdout}{done.stderr}"
        self.history.append(f"madmail {' '.join(args)}: {done.stdout.strip()}")
        return done.stdout


def wait_for_first_expiry(log_path: str):
    """Returns once the relay's expiry task has had its first run (logged as
    `expiry done`), or once that run is surely over."""
    deadline = time.monotonic() + FIRST_EXPIRY_WITHIN
    while time.monotonic() < deadline:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            if "expiry done" in log.read():
                return
        time.sleep(1)


@pytest.fixture(scope="module")
def clock(relay) -> Clock:
    names = ["FAKETIME_FILE", "FAKETIME_LIB", "BIN", "CONFIG", "QUOTA", "LOG"]
    values = {name: os.environ.get(f"MADMAIL_{name}") for name in names}
    if not all(values.values()):
        pytest.skip("needs the clock relay of `cargo xtask e2e` (MADMAIL_FAKETIME_FILE, ...)")
    wait_for_first_expiry(values["LOG"])
    with open(values["FAKETIME_FILE"], encoding="ascii") as current:
        offset = int(current.read().strip().lstrip("+") or 0)
    return Clock(values["FAKETIME_FILE"], values["FAKETIME_LIB"], values["BIN"], values["CONFIG"], offset)


@pytest.fixture
def quota() -> int:
    return int(os.environ["MADMAIL_QUOTA"])


def account(relay) -> tuple[str, str]:
    """A new account, created by its first IMAP login."""
    address, password = relay.new_credentials()
    with imap_login(relay, address, password):
        pass
    return address, password


def new_id(label: str) -> str:
    return f"<{label}.{secrets.token_hex(6)}@clock.test>"


def deliver(relay, sender, recipient: str, label: str, size: int) -> str:
    """Submits an encrypted-shaped message; asserts it was accepted and returns its Message-ID."""
    message_id = new_id(label)
    reply = submit(relay, *sender, recipient, encrypted_message(sender[0], recipient, size, message_id))
    assert reply == (250, ""), f"{label}: {reply}"
    return message_id


def expire_report(output: str) -> tuple[int, int, int, int]:
    """(old, large, bytes, accounts) from the first line of `madmail expire`."""
    found = re.search(
        r"(?:would delete|deleted): (\d+) old messages, (\d+) large seen messages \((\d+) bytes\), "
        r"(\d+) inactive accounts",
        output,
    )
    assert found, output
    return tuple(int(n) for n in found.groups())


def test_trim_takes_the_oldest_down_to_70_percent_and_never_the_last_24_hours(relay, clock, quota):
    sender, (rcpt, rcpt_password) = account(relay), account(relay)
    size = quota * 98 // 1000
    old = [deliver(relay, sender, rcpt, f"old{n}", size) for n in (1, 2)]
    clock.advance(2 * DAY)
    recent = [deliver(relay, sender, rcpt, f"recent{n}", size) for n in range(1, 6)]
    stored = inbox(relay, rcpt, rcpt_password)
    assert set(stored) == set(old + recent), "below 75 %: nothing trimmed"
    # The relay stamped them with its (moved) clock.
    start = clock.now() - 2 * DAY
    assert all(abs(stored[m]["date"] - start) < CLOCK_SLACK for m in old), stored
    assert all(abs(stored[m]["date"] - clock.now()) < CLOCK_SLACK for m in recent), stored
    usage = sum(m["size"] for m in stored.values())
    assert usage < quota * 75 // 100 <= usage + size, "the next delivery reaches 75 %"

    # Each delivery that reaches 75 % takes the oldest message, just enough for 70 %.
    for gone in old:
        recent.append(deliver(relay, sender, rcpt, f"recent{len(recent) + 1}", size))
        stored = inbox(relay, rcpt, rcpt_password)
        assert gone not in stored, f"{gone} should have been trimmed"
        assert set(stored) == set(old[old.index(gone) + 1 :] + recent)
        assert sum(m["size"] for m in stored.values()) <= quota * 70 // 100

    # Only messages of the last 24 h are left: nothing more is trimmed, up to the quota.
    while sum(m["size"] for m in stored.values()) + size <= quota:
        recent.append(deliver(relay, sender, rcpt, f"recent{len(recent) + 1}", size))
        stored = inbox(relay, rcpt, rcpt_password)
        assert set(stored) == set(recent), "a message of the last 24 hours was trimmed"
    assert sum(m["size"] for m in stored.values()) > quota * 75 // 100

    message = encrypted_message(sender[0], rcpt, size, new_id("over"))
    code, text = submit(relay, *sender, rcpt, message)
    assert (code, text.split()[0]) == (552, "5.2.2"), (code, text)
    assert set(inbox(relay, rcpt, rcpt_password)) == set(recent), "a refusal deletes nothing"


def test_retention_deletes_old_and_seen_large_messages_and_keeps_the_rest(relay, clock):
    sender, (rcpt, password) = account(relay), account(relay)
    small, large = 5_000, LARGE + 20_000
    ids = {"old": deliver(relay, sender, rcpt, "old", small)}
    clock.advance(DAY + 2 * HOUR)
    ids["almost-old"] = deliver(relay, sender, rcpt, "almost-old", small)
    clock.advance(13 * DAY - 2 * HOUR)
    for label, size in [("large-seen", large), ("large-unseen", large), ("small-seen", small)]:
        ids[label] = deliver(relay, sender, rcpt, label, size)
    clock.advance(5 * DAY)
    ids["large-seen-recent"] = deliver(relay, sender, rcpt, "large-seen-recent", large)
    stored = inbox(relay, rcpt, password)
    mark_seen(relay, rcpt, password, [stored[ids[k]]["uid"] for k in ("large-seen", "small-seen", "large-seen-recent")])
    clock.advance(2 * DAY + HOUR)
    ids["fresh"] = deliver(relay, sender, rcpt, "fresh", small)

    # 21 d 1 h after "old", 7 d 1 h after the large ones.
    stored = inbox(relay, rcpt, password)
    age = {label: clock.now() - stored[message_id]["date"] for label, message_id in ids.items()}
    assert age["old"] > DELETE_MAILS_AFTER > age["almost-old"], age
    assert age["large-seen"] > DELETE_LARGE_AFTER > age["large-seen-recent"], age
    assert "\\Seen" in stored[ids["large-seen"]]["flags"], stored

    dry = expire_report(clock.madmail("expire", "--dry-run"))
    assert set(inbox(relay, rcpt, password)) == set(ids.values()), "the dry run deleted something"
    done = expire_report(clock.madmail("expire"))
    assert done == dry, f"dry run {dry}, real run {done}"
    assert done[0] >= 1 and done[1] >= 1, done
    kept = {label for label, message_id in ids.items() if message_id in inbox(relay, rcpt, password)}
    assert kept == {"almost-old", "large-unseen", "small-seen", "large-seen-recent", "fresh"}, clock.history


def test_accounts_inactive_for_90_days_go_with_their_mail(relay, clock):
    (idle, idle_password), (active, active_password) = account(relay), account(relay)
    sender = account(relay)
    deliver(relay, sender, idle, "to-idle", 5_000)
    clock.advance(60 * DAY)
    with imap_login(relay, active, active_password):
        pass
    clock.advance(29 * DAY)
    listed = clock.madmail("expire", "--dry-run", "--verbose")
    assert idle not in listed, "89 days without login: not yet"
    clock.advance(2 * DAY)
    listed = clock.madmail("expire", "--dry-run", "--verbose")
    assert idle in listed and active not in listed, listed

    output = clock.madmail("expire", "--verbose")
    assert re.search(rf"^\s+{re.escape(idle)}$", output, re.M), output
    # Gone with its mail: the address is free again, for anyone, and empty.
    assert inbox(relay, idle, "another-" + idle_password) == {}
    assert inbox(relay, active, active_password) == {}


def test_delta_chat_sees_the_quota_refusal_of_a_full_mailbox(relay, clock, quota, make_profiles):
    alice, bob = make_profiles(2)
    bob_address = bob.get_config("configured_addr")
    chat = alice.create_chat(bob)
    # Bob's client stays offline, so his mail stays on the relay.
    bob.stop_io()
    sender = account(relay)
    # Fill Bob's mailbox with messages of the last 24 h until less than 1.5 kB are left.
    for size in (quota // 10, quota // 100, 1_500):
        while True:
            message = encrypted_message(sender[0], bob_address, size, new_id("filler"))
            code, text = submit(relay, *sender, bob_address, message)
            if code != 250:
                assert (code, text.split()[0]) == (552, "5.2.2"), (code, text)
                break

    sent = chat.send_text("does this fit?")
    deadline = time.monotonic() + 90
    while sent.get_snapshot().state != 24:  # MessageState::OutFailed
        event = next_event(alice, deadline)
        assert event.kind != EventType.MSG_DELIVERED or event.msg_id != sent.id, "delivered over quota"
    assert "5.2.2" in (sent.get_snapshot().error or ""), sent.get_snapshot()
