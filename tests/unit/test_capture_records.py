"""Reading captured records back, and which objects retention removes (pure parts of serving.flywheel.records)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from serving.api.problems import UserError
from serving.cli.flywheel_commands import prune_target
from serving.flywheel.records import ReadStats, expired, is_callers, parse_records
from serving.policy.capture import AnsweredBy, record


def _line(**changes) -> bytes:
    rec = record(route="r", policy="split", call="chat", request={}, answer={}, answered_by=AnsweredBy(), status=200,
                 input_tokens=0, output_tokens=0, latency_s=0, caller="c1",
                 now=datetime(2026, 12, 1, 12, tzinfo=UTC))
    return json.dumps({**rec, **changes}).encode()


def test_lines_that_are_not_records_are_skipped_and_counted():
    stats = ReadStats()
    lines = [_line(), b"", b"{not json", json.dumps({"schemaVersion": 3}).encode(), b"[1, 2]",
             _line(time="2026-12-01T09:00:00.000Z")]
    got = list(parse_records(lines, stats, since=datetime(2026, 12, 1, 10, tzinfo=UTC)))
    assert len(got) == 1 and got[0]["time"] == "2026-12-01T12:00:00.000Z"
    assert stats.records == 1
    assert dict(stats.skipped) == {"lines that are not JSON": 1, "foreign records (schemaVersion 3)": 1,
                                   "foreign records (not a JSON object but list)": 1}
    assert "1 record(s) from 0 object(s); skipped: " in stats.summary()


@pytest.mark.parametrize("key,last_modified,old", [
    ("c/route=a/date=2026-10-31/x.jsonl.gz", datetime(2026, 12, 1, tzinfo=UTC), True),   # its day ended before
    ("c/route=a/date=2026-11-01/x.jsonl.gz", datetime(2026, 10, 1, tzinfo=UTC), False),  # ends after the cutoff
    ("c/README.txt", datetime(2026, 10, 1, tzinfo=UTC), True),                           # no day: last change
    ("c/README.txt", datetime(2026, 11, 30, tzinfo=UTC), False),
    ("c/route=a/date=junk/x.jsonl.gz", datetime(2026, 10, 1, tzinfo=UTC), True),
])
def test_retention_goes_by_the_day_partition(key, last_modified, old):
    assert expired(key, last_modified, cutoff=datetime(2026, 11, 1, 12, tzinfo=UTC)) is old


def test_a_callers_lines_are_recognised():
    assert is_callers(_line(), {"c1"}) and not is_callers(_line(), {"c2"}) and not is_callers(b"nope", {"c1"})


def test_prune_takes_destination_and_retention_from_a_fleet_file(tmp_path):
    from tests.unit.fleets import fleet

    path = tmp_path / "fleet.yaml"
    path.write_text(json.dumps({**fleet(), "capture": {"destination": "s3://cap/x", "retention": "7d"}}))
    assert prune_target(None, None, str(path)) == ("s3://cap/x", "7d")
    assert prune_target("s3://other", "1d", str(path)) == ("s3://other", "1d")
    assert prune_target("s3://a", "2d", None) == ("s3://a", "2d")
    with pytest.raises(UserError, match="give SRC and --older-than D, or --fleet FILE"):
        prune_target("s3://a", None, None)
    path.write_text(json.dumps(fleet()))
    with pytest.raises(UserError, match="has no capture section"):
        prune_target(None, None, str(path))
