"""Route and adapter changes apply to the running fleet without restarting engine replicas."""

import copy

from ray import serve

from serving.render.serve_config import APP_NAME, base_deployment_name

PROMPT = "in: red fox\nout:"


def replica_info():
    handle = serve.get_deployment_handle(base_deployment_name("tiny-llama"), app_name=APP_NAME)
    return handle.replica_info.remote().result(timeout_s=60)


def test_route_and_adapter_changes_apply_live(fleet, client):
    before = replica_info()
    assert client.post("/v1/completions", json={"model": "echo", "prompt": PROMPT, "max_tokens": 8}
                       ).headers.get("x-slmfleet-adapter") is None

    changed = copy.deepcopy(fleet.spec_data)
    # A new adapter version, pushed as shout v2, becomes the whole of the 'echo' route,
    # and a new route appears.
    shout = next(a for a in changed["adapters"] if a["name"] == "shout")
    shout["versions"].append({"version": "v2", "source": "s3://slmfleet-demo/adapters/shout/v1"})
    echo = next(r for r in changed["routes"] if r["name"] == "echo")
    echo["targets"] = [{"adapter": "shout", "version": "v2"}]
    changed["routes"].append({"name": "loud", "targets": [{"adapter": "shout", "version": "v1"}]})
    try:
        fleet.deploy(changed)
        resp = client.post("/v1/completions",
                           json={"model": "echo", "prompt": PROMPT, "max_tokens": 8, "temperature": 0})
        assert resp.status_code == 200, resp.text
        assert (resp.headers["x-slmfleet-adapter"], resp.headers["x-slmfleet-version"]) == ("shout", "v2")
        assert resp.json()["choices"][0]["text"].strip().isupper()
        resp = client.post("/v1/completions", json={"model": "loud", "prompt": PROMPT, "max_tokens": 8})
        assert resp.status_code == 200

        after = replica_info()
        assert (after["pid"], after["startedAt"]) == (before["pid"], before["startedAt"]), "engine restarted"
        assert "tiny-llama:shout@v2" in after["catalog"]
    finally:
        fleet.deploy(fleet.spec_data)
    assert client.post("/v1/completions", json={"model": "loud", "prompt": PROMPT}).status_code == 404
    assert replica_info()["pid"] == before["pid"]
