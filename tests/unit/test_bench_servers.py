"""The benchmarks' stage servers (benchmarks/servers.py): a server that cannot start is reported at once, with its
log, instead of after the whole start-up timeout."""

from __future__ import annotations

import time

import pytest

from benchmarks.servers import stage_servers


def test_a_server_that_exits_is_reported_at_once_with_its_log():
    started = time.monotonic()
    with pytest.raises(RuntimeError) as raised, stage_servers(("nosuchstage",), timeout_s=600):
        pytest.fail("a stage that does not exist came up")
    message = str(raised.value)
    assert "the nosuchstage server exited with code 2 before it was SERVING" in message
    assert "invalid choice: 'nosuchstage'" in message  # the tail of its log
    assert time.monotonic() - started < 120  # not the 600 s timeout
