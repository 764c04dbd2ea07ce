"""Tenants in the spec, the keys file, who may call what, and the limits' state machines (time injected)."""

import math
from datetime import UTC, datetime

import pytest

from serving.api.fleet import parse_fleet
from serving.api.keys import KeysFileError, format_keys, key_sha256, new_entry, new_key, parse_keys
from serving.api.problems import FleetSpecError
from serving.api.tenants import TenantSpec
from serving.policy.access import (
    ANYONE,
    FLEET,
    INTERNAL,
    Caller,
    KeyRing,
    bearer_key,
    identify,
    limit_refusal,
    route_refusal,
)
from serving.policy.limits import FleetLimits, Leases, TokenBucket, estimate_tokens, period_end, period_start
from tests.unit.fleets import FLEET as FLEET_DATA
from tests.unit.fleets import fleet

TENANTS = [{"name": "team-a", "routes": ["shout", "json"], "requestsPerMinute": 60},
           {"name": "team-b", "routes": ["*"], "pinVersions": True, "budget": {"tokens": 1000, "period": "day"}}]


def test_tenants_parse_with_defaults_and_costs_inherit():
    spec = parse_fleet(fleet(tenants=TENANTS, **{"baseModels.0.costPer1kTokens": 0.5,
                                                 "adapters.1.costPer1kTokens": 0.2}))
    a, b = spec.tenants
    assert not spec.open and not a.pin_versions and a.tokens_per_minute is None and a.budget is None
    assert b.allows("echo") and not a.allows("echo") and b.budget.period == "day"
    assert parse_fleet(FLEET_DATA).open
    from serving.api.routes import TargetRef
    assert spec.cost_per_1k_tokens(TargetRef(adapter="shout", version="v1")) == 0.5  # inherited from its base
    assert spec.cost_per_1k_tokens(TargetRef(adapter="json", version="v1")) == 0.2  # its own
    assert spec.cost_per_1k_tokens(TargetRef(base_model="tiny-qwen")) == 0


@pytest.mark.parametrize("changes, path, words", [
    ({"tenants": [{"name": "a", "routes": ["nope"]}]}, "tenants[0].routes[0]", "unknown route 'nope'"),
    ({"tenants": [{"name": "a", "routes": ["*"]}, {"name": "a", "routes": ["*"]}]}, "tenants[1].name",
     "duplicate tenant 'a'"),
    ({"tenants": [{"name": "a", "routes": []}]}, "tenants[0].routes", "at least 1"),
    ({"tenants": [{"name": "a", "routes": ["*", "shout"]}]}, "tenants[0].routes", "'*' alone"),
    ({"tenants": [{"name": "A b", "routes": ["*"]}]}, "tenants[0].name", "pattern"),
    ({"tenants": [{"name": "a", "routes": ["*"], "requestsPerMinute": 0}]}, "tenants[0].requestsPerMinute",
     "greater than or equal to 1"),
    ({"tenants": [{"name": "a", "routes": ["*"], "budget": {"tokens": 5, "period": "year"}}]},
     "tenants[0].budget.period", "'day', 'week' or 'month'"),
    ({"tenancy": {"state": "s3://bucket/x"}}, "tenancy", "declares none"),
    ({"tenants": [{"name": "a", "routes": ["*"]}], "tenancy": {"state": "/tmp/x"}}, "tenancy.state", "not an S3 URI"),
    ({"tenants": [{"name": "a", "routes": ["*"], "rpm": 3}]}, "tenants[0].rpm", "unknown field"),
])
def test_tenant_problems_name_the_field(changes, path, words):
    with pytest.raises(FleetSpecError) as err:
        parse_fleet(fleet(**changes))
    assert any(p.path == path and words in p.message for p in err.value.problems), err.value.problems


def test_keys_file_round_trip_and_problems():
    key = new_key()
    entry = new_entry("team-a", key, now=datetime(2026, 12, 3, tzinfo=UTC))
    assert key.startswith("sk-slmfleet-") and key not in format_keys([entry])
    assert parse_keys(format_keys([entry])) == [entry]
    assert parse_keys("") == [] and parse_keys("keys: []") == []
    cases = [("keys: [{tenant: a, sha256: " + key + "}]", "keys[0].sha256: must be the 64 hex digits"),
             ("keys:\n- {tenant: a, sha256: " + "a" * 64 + "}\n- {tenant: b, sha256: " + "a" * 64 + "}",
              "keys[1].sha256: the same key is listed twice"),
             ("keys: [{tenant: A!, sha256: " + "a" * 64 + "}]", "keys[0].tenant"),
             ("keys: [{tenant: a, sha256: " + "a" * 64 + ", key: x}]", "unknown field(s) key"),
             ("- a\n- b", "must be a mapping with one field, keys"),
             ("keys: [", "is not YAML")]
    for text, words in cases:
        with pytest.raises(KeysFileError, match=None) as err:
            parse_keys(text, source="k.yaml")
        assert words in str(err.value), (text, str(err.value))


def test_key_ring_finds_keys_and_refuses_the_internal_key_in_the_file():
    key, internal = new_key(), new_key()
    ring = KeyRing([new_entry("team-a", key)], key_sha256(internal))
    assert ring.find(key).tenant == "team-a" and ring.find(internal).tenant == INTERNAL
    assert ring.find(key + "x") is None and ring.find("") is None
    with pytest.raises(KeysFileError, match="internal key"):
        KeyRing([new_entry("team-a", internal)], key_sha256(internal))


def test_identify_every_outcome():
    key, internal, orphan = new_key(), new_key(), new_key()
    tenants = [TenantSpec.model_validate(t) for t in TENANTS]
    ring = KeyRing([new_entry("team-a", key), new_entry("gone", orphan)], key_sha256(internal))
    assert bearer_key("Bearer  abc ") == "abc" and bearer_key("Basic abc") is None and bearer_key("Bearer") is None
    table = [
        (None, 401, "missing_api_key"), ("Basic " + key, 401, "missing_api_key"),
        ("Bearer nope", 401, "invalid_api_key"), (f"Bearer {orphan}", 401, "invalid_api_key"),
    ]
    for header, status, code in table:
        refusal = identify(ring, tenants, header)
        assert (refusal.status, refusal.code) == (status, code), header
        assert key not in refusal.message and orphan not in refusal.message  # keys never in errors
    assert identify(ring, tenants, f"bearer {key}").tenant.name == "team-a"
    assert identify(ring, tenants, f"Bearer {internal}") == FLEET
    assert identify(ring, [], None) == ANYONE and identify(ring, [], "Bearer whatever") == ANYONE
    assert identify(ring, [], f"Bearer {internal}") == FLEET


def test_route_refusals():
    a, b = (TenantSpec.model_validate(t) for t in TENANTS)
    routes = ["shout", "json", "echo"]
    assert route_refusal(Caller(a), "echo", routes, pins_version=False).code == "route_not_allowed"
    assert route_refusal(Caller(a), "shout", routes, pins_version=True).code == "version_pin_not_allowed"
    assert route_refusal(Caller(a), "shout", routes, pins_version=False) is None
    assert route_refusal(Caller(a), "nope", routes, pins_version=False) is None  # the router's 404
    assert route_refusal(Caller(b), "echo", routes, pins_version=True) is None
    assert route_refusal(FLEET, "echo", routes, pins_version=True) is None
    assert route_refusal(ANYONE, "echo", routes, pins_version=True) is None
    assert limit_refusal("a", "budget", 30.2).code == "insufficient_quota"
    assert limit_refusal("a", "budget", 30.2).retry_after == 31
    assert limit_refusal("a", "requests", 0.2).code == "rate_limit_exceeded"
    assert limit_refusal("a", "tokens", math.inf).retry_after == 60


def test_token_bucket_refills_continuously_up_to_a_minute():
    bucket = TokenBucket(60)
    assert bucket.refill(100.0) == 60  # starts full
    bucket.level = 0
    assert bucket.wait_for(1, 100.0) == pytest.approx(1.0)
    assert bucket.refill(130.0) == pytest.approx(30)
    assert bucket.refill(1000.0) == 60
    assert bucket.wait_for(61, 1000.0) == math.inf


@pytest.mark.parametrize("period, now, start, end", [
    ("day", "2026-12-03T17:30:00", "2026-12-03T00:00:00", "2026-12-04T00:00:00"),
    ("week", "2026-12-03T17:30:00", "2026-11-30T00:00:00", "2026-12-07T00:00:00"),  # Monday
    ("month", "2026-12-03T17:30:00", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
    ("month", "2026-02-28T23:59:59", "2026-02-01T00:00:00", "2026-03-01T00:00:00"),
])
def test_calendar_periods_in_utc(period, now, start, end):
    ts = lambda s: datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp()  # noqa: E731
    assert period_start(period, ts(now)) == ts(start)
    assert period_end(period, ts(now)) == ts(end)


def tenant(**limits):
    return TenantSpec.model_validate({"name": "t", "routes": ["*"], **limits})


NOW = datetime(2026, 12, 3, 12, tzinfo=UTC).timestamp()


def test_request_rate_limit_across_two_routers_sharing_the_fleet_state():
    """Two router replicas' leases from one FleetLimits: 60 a minute in all, however they are spread."""
    spec = tenant(requestsPerMinute=60)
    fleet_state, routers = FleetLimits([spec]), [Leases({"t": spec}), Leases({"t": spec})]
    admitted, refused = 0, []
    for i in range(100):  # all within the same second
        leases = routers[i % 2]
        need = leases.admit("t", 0, NOW)
        if need is None:
            admitted += 1
            continue
        grant = fleet_state.lease("t", *need, NOW)
        if grant.granted:
            leases.take("t", grant, need, NOW)
            admitted += 1
        else:
            refused.append(grant)
    assert admitted == 60 and refused[0].refused == "requests" and refused[0].retry_after == pytest.approx(1.0)
    # After the leases' time, what routers hold and did not use goes back; a second later one more is there.
    for leases in routers:
        for t, r, tok in leases.expired(NOW + 10):
            fleet_state.give_back(t, r, tok, NOW + 10)
    assert fleet_state.lease("t", 1, 0, NOW + 10).granted


def test_token_budget_reserves_then_settles_and_refuses_when_spent():
    spec = tenant(budget={"tokens": 1000, "period": "day"})
    state, leases = FleetLimits([spec]), Leases({"t": spec})
    reserve = estimate_tokens(30, 100)  # 10 prompt tokens estimated + max_tokens
    assert reserve == 110
    need = leases.admit("t", reserve, NOW)
    grant = state.lease("t", *need, NOW)
    assert grant.granted and grant.tokens >= reserve
    leases.take("t", grant, need, NOW)
    leases.settle("t", reserve, 40)  # it used 40: 70 back into the lease
    for t, r, tok in leases.expired(NOW + 5, everything=True):
        state.give_back(t, r, tok, NOW + 5)
    assert state.report("t", NOW + 5)["budget"]["used"] == 40
    assert state.lease("t", 0, 960, NOW + 5).granted  # the rest of the day's budget
    refused = state.lease("t", 0, 1, NOW + 6)
    assert refused.refused == "budget" and refused.retry_after == pytest.approx(12 * 3600 - 6)
    assert state.lease("t", 0, 1, NOW + 12 * 3600).granted  # the next day


def test_an_answer_longer_than_reserved_is_a_debt_paid_by_the_next_lease():
    spec = tenant(tokensPerMinute=600)
    state, leases = FleetLimits([spec]), Leases({"t": spec})
    need = leases.admit("t", 100, NOW)
    grant = state.lease("t", *need, NOW)
    leases.take("t", grant, need, NOW)
    leases.settle("t", 100, 100 + grant.tokens)  # far more than reserved: the lease is in debt
    assert leases.admit("t", 10, NOW) == (0, 10)  # the lease no longer covers it
    back = leases.before_new_lease("t")
    assert back[1] < 0
    state.give_back("t", *back, NOW)
    bucket_after = state._tenants["t"].tokens.level
    assert bucket_after == pytest.approx(600 - (100 + grant.tokens))  # exactly what it used, debt included


def test_budgets_survive_a_snapshot_but_not_a_new_period():
    spec = tenant(budget={"tokens": 1000, "period": "month"})
    state = FleetLimits([spec])
    state.lease("t", 0, 300, NOW)
    snapshot = state.snapshot()
    restored = FleetLimits([spec])
    restored.restore(snapshot, NOW + 60)
    assert restored.report("t", NOW + 60)["budget"]["used"] == snapshot["budgets"]["t"]["used"] >= 300
    next_month = FleetLimits([spec])
    next_month.restore(snapshot, datetime(2027, 1, 2, tzinfo=UTC).timestamp())
    assert next_month.report("t", datetime(2027, 1, 2, tzinfo=UTC).timestamp())["budget"]["used"] == 0


def test_a_changed_limit_keeps_what_was_spent_and_an_unlimited_tenant_needs_no_lease():
    state = FleetLimits([tenant(budget={"tokens": 1000, "period": "day"})])
    state.lease("t", 0, 200, NOW)
    used = state.report("t", NOW)["budget"]["used"]
    state.configure([tenant(budget={"tokens": 5000, "period": "day"})])
    assert state.report("t", NOW)["budget"] == {**state.report("t", NOW)["budget"], "used": used, "tokens": 5000}
    assert Leases({"t": tenant()}).admit("t", 500, NOW) is None
    assert state.lease("nobody", 1, 1, NOW).refused == "tenant"


def test_usage_report_sums_per_route_and_answerer():
    state = FleetLimits([tenant()])
    state.record("t", "shout", "shout@v1", 1, 10, 5, 0.015)
    state.record("t", "shout", "shout@v1", 1, 20, 5, 0.025)
    state.record("t", "cascade", "tier 2: base big", 1, 100, 50, 1.5)
    report = state.report("t", NOW)
    assert report["totals"] == {"requests": 3, "tokens": 190, "estimatedCost": 1.54}
    assert report["usage"][1] == {"route": "shout", "answeredBy": "shout@v1", "requests": 2, "promptTokens": 30,
                                  "completionTokens": 10, "estimatedCost": 0.04}


def test_an_unreachable_limiter_fails_budgets_closed_and_rates_open_by_default():
    from serving.api.tenants import WhenLimiterUnavailable
    from serving.policy.access import unreachable_refusal

    default, strict = WhenLimiterUnavailable(), WhenLimiterUnavailable(rates="closed", budgets="open")
    assert unreachable_refusal(tenant(budget={"tokens": 10}), default).code == "limiter_unavailable"
    assert unreachable_refusal(tenant(requestsPerMinute=5), default) is None
    assert unreachable_refusal(tenant(requestsPerMinute=5), strict).status == 503
    assert unreachable_refusal(tenant(budget={"tokens": 10}), strict) is None
    assert unreachable_refusal(tenant(), strict) is None
