"""Fixtures: the relay under test and Delta Chat profiles on it.

Each test gets its own `deltachat-rpc-server` process with its accounts in
the test's temporary directory, and fresh accounts on the relay (a first
login creates them), so tests do not depend on each other.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from deltachat_rpc_client import DeltaChat, Rpc

from support import Relay

# `Rpc` starts `deltachat-rpc-server` from PATH; the one installed beside this
# interpreter (the pinned version) comes first.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def pytest_report_header():
    lines = []
    for label, prefix in (("madmail relay", "MADMAIL"), ("second relay", "MADMAIL2")):
        if prefix == "MADMAIL" or os.environ.get(f"{prefix}_DOMAIN"):
            relay = Relay.from_env(prefix)
            lines.append(f"{label}: domain={relay.domain} host={relay.host} new={relay.new_url}")
    return lines


@pytest.fixture(scope="session")
def relay() -> Relay:
    return Relay.from_env()


@pytest.fixture(scope="session")
def relay2() -> Relay:
    """A second relay (`MADMAIL2_*`) for federation scenarios; they skip without one."""
    if not os.environ.get("MADMAIL2_DOMAIN"):
        pytest.skip("MADMAIL2_DOMAIN not set: no second relay to federate with")
    return Relay.from_env("MADMAIL2")


@pytest.fixture
def deltachat(tmp_path):
    """A Delta Chat core with its accounts in the test's temporary directory."""
    with Rpc(accounts_dir=str(tmp_path / "accounts")) as rpc:
        yield DeltaChat(rpc)


@pytest.fixture
def make_profiles(deltachat, relay):
    """`make_profiles(n)` configures n new profiles in parallel and brings them online.

    `make_profiles(credentials=[(addr, pw), ...])` uses the given logins;
    `make_profiles(on=[relay, relay2, ...])` makes one profile on each relay listed.
    `make_profiles(1, only_port=443)` connects IMAP and SMTP over that port only;
    `make_profiles(1, proxy="ss://...")` connects through that proxy only.
    """

    def make(count: int = 0, credentials=None, on=None, only_port=None, proxy=None):
        relays = on or [relay] * (len(credentials) if credentials else count)
        credentials = credentials or [where.new_credentials() for where in relays]
        pending = []
        for (address, password), where in zip(credentials, relays):
            account = deltachat.add_account()
            # Never let the core add relays of its own choosing.
            account.set_config("autorelay", "0")
            account.set_config("displayname", address.split("@")[0])
            if proxy:
                account.set_config("proxy_url", proxy)
                account.set_config("proxy_enabled", "1")
            pending.append((account, account.add_transport_from_qr.future(where.dclogin(address, password, only_port))))
        for account, configured in pending:
            configured()
            assert account.is_configured()
        for account, _ in pending:
            account.bring_online()
        return [account for account, _ in pending]

    return make


@pytest.fixture
def unconfigured_profile(deltachat):
    """A profile without a transport, for login attempts expected to fail."""
    account = deltachat.add_account()
    account.set_config("autorelay", "0")
    return account
