"""Invite tokens with real Delta Chat profiles: while registration is
closed, a profile cannot register from the relay's `dcaccount:` link, does
register from an invite's link, and a used-up invite admits nobody. The
operator drives the relay through the admin API, as Madmail's tools do.

The `dcaccount:` links name the relay's domain, so the Delta Chat core runs
in a mount namespace of its own with a hosts file that resolves it (Delta
Chat skips CA checks for `_` domains but checks the name)."""

import os
import shutil

import pytest
from deltachat_rpc_client import DeltaChat, Rpc

from support import admin_call


@pytest.fixture
def named_deltachat(tmp_path, relay):
    """A Delta Chat core that resolves the relay's domain to its host."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a private /etc/hosts")
    if relay.https_port != 443 or relay.imaps_port != 993 or relay.submissions_port != 465:
        pytest.skip("the dcaccount: flow needs the relay on the standard ports")
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{relay.host} {relay.domain}\n")
    server = tmp_path / "rpc-server"
    server.write_text(
        "#!/bin/sh\n"
        f"exec unshare --mount sh -c 'mount --bind \"$0\" /etc/hosts && exec \"$1\"' "
        f"'{hosts}' '{shutil.which('deltachat-rpc-server')}'\n"
    )
    server.chmod(0o755)
    with Rpc(accounts_dir=str(tmp_path / "accounts"), rpc_server_path=str(server)) as rpc:
        yield DeltaChat(rpc)


@pytest.fixture
def closed_relay(relay):
    if not relay.admin_api or not relay.config_path:
        pytest.skip("needs a relay with the admin API on and its config (MADMAIL_ADMIN_API, MADMAIL_CONFIG)")
    reply = admin_call(relay, "POST", "/admin/registration", {"action": "close"})
    assert reply["body"] == {"status": "closed"}, reply
    try:
        yield relay
    finally:
        admin_call(relay, "POST", "/admin/registration", {"action": "open"})


def register(deltachat, link):
    """A new profile configured from `link`; returns it, or the error text."""
    account = deltachat.add_account()
    account.set_config("autorelay", "0")
    try:
        account.add_transport_from_qr(link)
    except Exception as error:  # the RPC client raises JsonRpcError
        return None, str(error)
    return account, None


def test_a_closed_relay_registers_delta_chat_only_with_a_live_invite(named_deltachat, closed_relay):
    relay, deltachat = closed_relay, named_deltachat
    open_link = f"dcaccount:https://{relay.domain}/new"
    account, error = register(deltachat, open_link)
    assert account is None and "registration is closed" in error, error

    created = admin_call(relay, "POST", "/admin/registration-token", {"max_uses": 1, "comment": "e2e"})
    assert created["status"] == 201, created
    invite = created["body"]
    link = invite["link"]
    assert link == f"{open_link}?token={invite['token']}", invite
    account, error = register(deltachat, link)
    assert account is not None, error
    assert account.is_configured()
    address = account.get_config("configured_addr")
    account.bring_online()
    # The first login took the token's only use.
    status = admin_call(relay, "GET", "/admin/registration-token", {"token": invite["token"]})["body"]
    assert (status["used_count"], status["status"]) == (1, "exhausted"), status
    found = admin_call(relay, "GET", "/admin/accounts", {"username": address})
    assert found["status"] == 200, found

    again, error = register(deltachat, link)
    assert again is None and "invalid or used-up invite token" in error, error
    admin_call(relay, "DELETE", "/admin/registration-token", {"token": invite["token"]})
