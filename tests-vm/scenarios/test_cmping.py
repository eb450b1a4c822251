"""`cmping`, the chatmail relay ping tool, against one relay and across two."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(300)
def test_cmping_delivers_every_ping(relay, tmp_path):
    if not relay.cmping_relay:
        pytest.skip("MADMAIL_CMPING_RELAY not set (cmping needs the relay on ports 993/465)")
    run_cmping(tmp_path, [relay.cmping_relay])


def run_cmping(tmp_path, relays: list[str]):
    """`cmping -c 5 RELAY [RELAY2]`: pings from the first relay to the last."""
    cmping = Path(sys.executable).parent / "cmping"
    # cmping keeps its profiles under $XDG_CACHE_HOME/cmping: keep them per run.
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run(
        [str(cmping), "-c", "5", *relays],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    print(result.stdout)
    print(result.stderr, file=sys.stderr)
    assert result.returncode == 0, f"cmping exited {result.returncode}"


@pytest.mark.timeout(300)
def test_cmping_across_two_relays_delivers_every_ping(tmp_path):
    first, second = os.environ.get("MADMAIL_CMPING_RELAY"), os.environ.get("MADMAIL_CMPING_RELAY2")
    if not (first and second):
        pytest.skip("MADMAIL_CMPING_RELAY and MADMAIL_CMPING_RELAY2 not both set")
    run_cmping(tmp_path, [first, second])
