"""The whole flywheel loop on the real stack: a cascade whose first tier cannot call tools, capture on,
then clusters -> dataset -> train (a short CPU run) -> evaluate -> propose -> shadow -> canary -> promoted, each
step the `slm-fleet` command a user runs, against the session's Ray Serve, vLLM and S3.

The fleet file (the session's fleet with the loop's adapter, routes and capture added) is served as
`slm-fleet serve` serves it (deployed, its edits followed, its rollouts driven by the same LocalRollouts), on
the session's Ray instead of a second one.
"""

from __future__ import annotations

import pytest

from serving.local.flywheel_loop import run_loop, served_on_running_ray
from tests.stack.conftest import ASSETS


@pytest.fixture
def session_serving(fleet):
    yield served_on_running_ray(fleet.port, fleet.metrics_url)
    fleet.deploy(fleet.spec_data)


def test_the_loop_closes(session_serving, fleet, s3, tmp_path):
    lines = []

    def log(line: str) -> None:  # printed as it comes, so a step that fails shows the steps before it
        lines.append(line)
        print(line)

    # Around the session's fleet: serving the loop's fleet, and the session's afterwards, restarts no engine.
    figures = run_loop(workdir=tmp_path, assets=ASSETS, serving=session_serving, s3_url=s3, around=fleet.spec_data,
                       log=log)
    # The first tier barely calls tools: 0 of 20 held-out tool requests when the stack tests run alone, 3 of 20
    # in full-suite runs (CI and its rehearsal, 2026-12-07) with the same generated weights, byte for byte: the
    # session engine, after every test before this one, decodes some of the shout adapter's near-tied tokens
    # otherwise...
    assert figures["first_tier_share_before"] <= 0.25
    assert figures["promoted"] is True, figures["rollout"]  # ...the canary of the trained version held up...
    assert figures["first_tier_share_after"] >= 0.7  # ...and now answers held-out tool requests itself...
    assert figures["first_tier_share_after"] - figures["first_tier_share_before"] >= 0.5  # ...which it did not
    assert figures["first_tier_share_other_tasks_after"] >= figures["first_tier_share_other_tasks_before"] - 0.15
    assert any("2 cluster(s)" in line for line in lines)
    # The canary shadowed live requests before its first step: copies answered unseen, judged, labelled apart.
    assert figures["shadow"] is not None and figures["shadow"].startswith("shadow passed"), figures["shadow"]
    version = figures["candidate_version"]  # v2, or v3 when evaluate found v2 worse at words
    assert fleet.counter("slmfleet_shadow_answers_total", version=version, outcome="agree") >= 6
    assert fleet.counter("slmfleet_requests_total", version=version, traffic="shadow") >= 10
    assert fleet.counter("slmfleet_requests_total", version=version, traffic="live") > 0
