"""Tenants on the real stack: keys, routes, limits across two router replicas, budgets, usage, and no key in logs.

The test fleet is redeployed with three tenants and two router replicas (the base deployments stay as they
are: only the router's config and replica count change), and back to the open fleet at the end.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from serving.api.fleet import parse_fleet
from serving.api.keys import INTERNAL_KEY_ENV, format_keys, new_entry, new_key, parse_keys
from serving.local import runtime as local_runtime
from serving.policy.limits import LEASE_REQUESTS
from tests.waiting import eventually

PROMPT = "in: red fox\nout:"
TENANTS = [
    {"name": "team-a", "routes": ["shout", "tools"]},
    {"name": "team-b", "routes": ["*"], "pinVersions": True},
    {"name": "team-rate", "routes": ["shout"], "requestsPerMinute": 6},
    {"name": "team-budget", "routes": ["shout"], "budget": {"tokens": 400, "period": "day"}},
]


@pytest.fixture(scope="module")
def tenants(fleet, tmp_path_factory):
    """The fleet with TENANTS, a key each in a keys file (as slm-fleet keys create writes it), two routers."""
    keys_file = tmp_path_factory.mktemp("keys") / "keys.yaml"
    keys = {t["name"]: new_key() for t in TENANTS}
    keys_file.write_text(format_keys([new_entry(name, key) for name, key in keys.items()]))
    spec = copy.deepcopy(fleet.spec_data)
    spec["tenants"] = TENANTS
    local_runtime.deploy(parse_fleet(spec), port=fleet.port, keys_file=str(keys_file),
                         overrides={"FleetRouter": {"num_replicas": 2}})
    yield keys, keys_file
    local_runtime.deploy(parse_fleet(fleet.spec_data), port=fleet.port, overrides={"FleetRouter": {"num_replicas": 1}})


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def completion(client, key, route="shout", **extra):
    return client.post("/v1/completions", headers=auth(key) if key else {},
                       json={"model": route, "prompt": PROMPT, "max_tokens": 4, "temperature": 0, **extra})


def error_of(resp, status):
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) >= {"message", "type", "code", "param"}
    return error


CHAT = {"model": "shout", "messages": [{"role": "user", "content": "red fox"}], "max_tokens": 4}
CALLS = [("/v1/chat/completions", CHAT), ("/v1/completions", {"model": "shout", "prompt": PROMPT, "max_tokens": 4}),
         ("/v1/responses", {"model": "shout", "input": "red fox", "max_output_tokens": 16})]


@pytest.mark.parametrize("path, body", CALLS, ids=["chat", "completions", "responses"])
def test_every_auth_outcome(tenants, client, path, body):
    keys, _ = tenants
    assert error_of(client.post(path, json=body), 401)["code"] == "missing_api_key"
    assert client.post(path, json=body).headers["www-authenticate"].startswith("Bearer")
    assert error_of(client.post(path, json=body, headers=auth("sk-slmfleet-nope")), 401)["code"] == "invalid_api_key"
    assert client.post(path, json=body, headers=auth(keys["team-a"])).status_code == 200
    other = {**body, "model": "reverse"}
    refused = error_of(client.post(path, json=other, headers=auth(keys["team-a"])), 403)
    assert refused["code"] == "route_not_allowed" and "team-a" in refused["message"]
    pinned = error_of(client.post(path, json=body, headers={**auth(keys["team-a"]), "X-SLMFleet-Version": "v1"}), 403)
    assert pinned["code"] == "version_pin_not_allowed"
    resp = client.post(path, json=other, headers={**auth(keys["team-b"]), "X-SLMFleet-Version": "v1"})
    assert resp.status_code == 200 and resp.headers["x-slmfleet-version"] == "v1"
    # The fleet's own key (probes, the demo's requests): every route, pinned versions.
    internal = os.environ[INTERNAL_KEY_ENV]
    assert client.post(path, json=other, headers={**auth(internal), "X-SLMFleet-Version": "v1"}).status_code == 200


def test_models_list_only_the_tenants_routes_and_probes_stay_open(tenants, client):
    keys, _ = tenants
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    error_of(client.get("/v1/models"), 401)
    names = {m["id"] for m in client.get("/v1/models", headers=auth(keys["team-a"])).json()["data"]}
    assert names == {"shout", "tools"}
    assert client.get("/v1/models/shout", headers=auth(keys["team-a"])).status_code == 200
    assert client.get("/v1/models/reverse", headers=auth(keys["team-a"])).status_code == 404
    everything = {m["id"] for m in client.get("/v1/models", headers=auth(keys["team-b"])).json()["data"]}
    assert everything == {r["name"] for r in parse_fleet(client_spec(tenants)).model_dump(by_alias=True)["routes"]}


def client_spec(tenants):
    from tests.stack.conftest import _test_fleet

    return {**_test_fleet(), "tenants": TENANTS}


async def test_mcp_needs_a_key_and_lists_only_the_tenants_tools(tenants, fleet):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    keys, _ = tenants
    async with httpx.AsyncClient() as plain:
        resp = await plain.post(f"{fleet.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                headers={"accept": "application/json, text/event-stream"})
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "missing_api_key"
    http = create_mcp_http_client(headers=auth(keys["team-a"]))
    async with http, streamable_http_client(f"{fleet.url}/mcp", http_client=http) as (read, write, *_), \
            ClientSession(read, write) as session:
        await session.initialize()
        tools = {t.name for t in (await session.list_tools()).tools}
        assert tools == {"shout", "tools"}
        answer = await session.call_tool("shout", {"prompt": "red fox", "max_tokens": 4})
        assert not answer.is_error, answer.content
        refused = await session.call_tool("reverse", {"prompt": "red fox"})
        assert refused.is_error and "no tool 'reverse'" in refused.content[0].text


def test_a_key_added_or_revoked_takes_effect_without_a_restart(tenants, client):
    keys, keys_file = tenants
    env = {**os.environ}
    made = subprocess.run([sys.executable, "-m", "serving.cli", "keys", "create", "--tenant", "team-a",
                           "--file", str(keys_file)], capture_output=True, text=True, env=env, check=True)
    key = made.stdout.strip()
    assert key.startswith("sk-slmfleet-") and key not in keys_file.read_text()
    eventually(lambda: completion(client, key).status_code == 200, timeout=20, message="new key not taken")
    new_id = parse_keys(keys_file.read_text())[-1].id
    subprocess.run([sys.executable, "-m", "serving.cli", "keys", "revoke", new_id, "--file", str(keys_file)],
                   check=True, capture_output=True, env=env)
    eventually(lambda: completion(client, key).status_code == 401, timeout=20, message="revoked key still works")
    # A broken keys file is not taken: the keys before it keep working.
    good = keys_file.read_text()
    keys_file.write_text("keys: [{tenant: team-a, sha256: not-a-hash}]")
    try:
        import time
        time.sleep(3)
        assert completion(client, keys["team-a"]).status_code == 200
    finally:
        keys_file.write_text(good)


def test_request_rate_limit_holds_across_two_router_replicas(tenants, client):
    from ray import serve

    keys, _ = tenants
    app = serve.status().applications["slm-fleet"]
    states = app.deployments["FleetRouter"].replica_states
    assert sum(n for state, n in states.items() if str(state).endswith("RUNNING")) == 2, states
    answers = [completion(client, keys["team-rate"], max_tokens=1) for _ in range(14)]
    ok = [a for a in answers if a.status_code == 200]
    limited = [a for a in answers if a.status_code == 429]
    # 6 a minute, the bucket refilling one every 10 s: 6, or 7 when the requests took over 10 s.
    assert 6 <= len(ok) <= 7 and len(ok) + len(limited) == 14, [a.status_code for a in answers]
    error = limited[0].json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert 1 <= int(limited[0].headers["retry-after"]) <= 11
    assert completion(client, keys["team-a"]).status_code == 200  # other tenants are not limited by it


def test_token_budget_is_exhausted_with_its_own_code_and_usage_reports_it(tenants, client, fleet):
    keys, _ = tenants
    key = keys["team-budget"]
    statuses = []
    for _ in range(40):
        resp = completion(client, key, max_tokens=24)
        statuses.append(resp.status_code)
        if resp.status_code == 429:
            break
    assert statuses[-1] == 429 and statuses.count(200) >= 3, statuses
    error = resp.json()["error"]
    assert error["code"] == "insufficient_quota" and "budget" in error["message"]
    assert int(resp.headers["retry-after"]) >= 1
    usage = client.get("/v1/fleet/usage", headers=auth(key)).json()
    assert usage["tenant"] == "team-budget" and usage["budget"]["tokens"] == 400
    # Less than the refused request would reserve, give or take one lease the other router replica held and
    # gave back unspent after the refusal (a lease covers LEASE_REQUESTS requests like it; CI saw 50 left).
    assert usage["budget"]["left"] < (24 + 10) * LEASE_REQUESTS, usage["budget"]
    row = next(r for r in usage["usage"] if r["route"] == "shout")
    # Both routers' counts reach the fleet's usage within their flush interval.
    eventually(lambda: client.get("/v1/fleet/usage", headers=auth(key)).json()["totals"]["requests"]
               == statuses.count(200), timeout=10, message="usage does not count every answered request")
    assert row["answeredBy"] == "shout@v1" and row["promptTokens"] > 0
    assert client.get("/v1/fleet/usage", headers=auth(keys["team-a"])).json()["tenant"] == "team-a"

    def exported():
        text = httpx.get(fleet.metrics_url, timeout=10).text
        return 'tenant="team-budget"' in text and "slmfleet_tenant_tokens_total" in text \
            and "slmfleet_tenant_refusals" in text
    eventually(exported, timeout=30, message="tenant usage metrics not exported")


def test_no_key_appears_in_logs_or_traces(tenants, client, otlp):
    keys, keys_file = tenants
    for key in keys.values():
        completion(client, key)
    completion(client, "sk-slmfleet-wrong-key-in-a-request")
    import time
    time.sleep(2)
    secrets = [*keys.values(), os.environ[INTERNAL_KEY_ENV], "sk-slmfleet-wrong-key-in-a-request"]
    logs = Path("/tmp/ray/session_latest/logs")
    found = []
    for path in logs.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            text = path.read_text(errors="replace")
            found += [f"{path.name}: {s[:16]}..." for s in secrets if s in text]
    spans = repr(otlp.spans)
    found += [f"trace: {s[:16]}..." for s in secrets if s in spans]
    assert not found, found
