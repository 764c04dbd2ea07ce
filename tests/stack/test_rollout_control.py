"""`slm-fleet rollout` against the control endpoint of `slm-fleet serve`'s rollouts, a real HTTP server on loopback.

The rollouts behind it record their deploys instead of sending them to Ray; their logic is tested
without a server in tests/unit/test_rollout_driver.py.
"""

from __future__ import annotations

import pytest

from serving.local.ports import free_port
from serving.local.rollouts import serve_control
from tests.unit.test_rollout_driver import local_rollouts


@pytest.fixture
def local():
    """The unit tests' LocalRollouts with its control endpoint; (driver, deploys, clock, url)."""
    driver, deployed, clock = local_rollouts()
    port = free_port()
    server = serve_control(driver, port)
    yield driver, deployed, clock, f"http://127.0.0.1:{port}"
    server.shutdown()


def cli(*argv):
    from serving.cli.main import main

    return main(list(argv))


def test_rollout_cli_against_a_local_fleet(local, capsys):
    driver, deployed, clock, url = local
    driver.tick()
    assert cli("rollout", "status", "--control", url) == 0
    out = capsys.readouterr().out
    assert "shout  shout@v2  shout@v1  Progressing  1/3   10%" in out and "history of shout (shout@v2)" in out
    assert cli("rollout", "pause", "shout", "--control", url) == 0
    assert "pause queued for shout" in capsys.readouterr().out
    driver.tick()
    assert driver.statuses["shout"].phase == "Paused"
    assert cli("rollout", "abort", "json", "--control", url) == 1
    assert "route 'json' has no canary strategy" in capsys.readouterr().err
    assert cli("rollout", "status", "--json", "--control", url) == 0
    assert '"phase": "Paused"' in capsys.readouterr().out
