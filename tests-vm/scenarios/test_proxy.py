"""The Shadowsocks proxy: a real Delta Chat profile that reaches the relay
only through the `ss://` link of the relay's index page sends and receives
messages, and the relay counts the tunnels it carried."""

from __future__ import annotations

import html
import re

import pytest

from support import accepted_chat, https_get, metric, wait_for_text

TUNNELS = "madmail_shadowsocks_tunnels_total"


def proxy_link(relay) -> str:
    """The `ss://` link the index page shows."""
    status, _, body = https_get(relay, "/")
    assert status == 200, status
    found = re.search(r"<code>(ss://[^<]+)</code>", body)
    assert found, "the index page shows no proxy link"
    return html.unescape(found.group(1))


def test_a_profile_behind_the_proxy_sends_and_receives(relay, make_profiles):
    if not relay.proxy_port:
        pytest.skip("MADMAIL_PROXY_PORT not set: the relay runs no Shadowsocks proxy")
    link = proxy_link(relay)
    assert link.split("#")[0].endswith(f":{relay.proxy_port}"), link
    before = metric(relay.metrics_url, TUNNELS) if relay.metrics_url else 0
    (alice,) = make_profiles(1, proxy=link)
    (bob,) = make_profiles(1)
    assert alice.get_config("proxy_enabled") == "1"

    accepted_chat(alice, bob).send_text("through the proxy")
    wait_for_text(bob, "through the proxy")
    accepted_chat(bob, alice).send_text("back through the proxy")
    wait_for_text(alice, "back through the proxy")

    if relay.metrics_url:
        tunnels = metric(relay.metrics_url, TUNNELS) - before
        # At least the IMAP and the SMTP connection of the proxied profile.
        assert tunnels >= 2, f"{tunnels} tunnels: the profile did not use the proxy"
