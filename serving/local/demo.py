"""``make demo``: the quickstart fleet on this machine, end to end.

Generates the tiny model and adapters (once, cached in .demo/), starts a local S3 endpoint,
uploads them where the fleet file says, serves the fleet, asks every route, and keeps serving
until Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from serving.adapters.store import AdapterStore
from serving.api import headers as h
from serving.api.capture import SECRET_ENV
from serving.api.fields import parse_s3_uri, version_label
from serving.api.fleet import FleetSpec
from serving.api.problems import UserError
from serving.local.runtime import internal_key

DEMO_PROMPTS = ["red fox sun", "blue moon", "green river stone"]
CAPTURES = "s3://slmfleet-demo/captures"
CAPTURE_SECRET = "slmfleet-demo-capture-secret"
"""The demo's key of captured callerIds (a real fleet takes it from a Secret: capture.callerIdSecret)."""
PII_PROMPT = "mail rosa.quint@example.net or call (415) 555-0142 about card 4000 0566 5566 5556"


def with_capture(spec: FleetSpec) -> FleetSpec:
    """``spec`` with capture on for every route at sample rate 1, to the demo's local S3 (the manifest keeps it off)."""
    data = spec.model_dump(by_alias=True, exclude_none=True)
    data["capture"] = {"destination": CAPTURES, "sampleRate": 1}
    return FleetSpec.model_validate(data)


def ensure_assets(assets: str | Path) -> dict:
    """The generated model and adapters under ``assets``: made on first use, and again whenever the
    generator (its code or the training libraries' versions) changed since."""
    from serving.local import demo_assets

    summary_file = Path(assets) / "assets.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        if summary.get("generator") == demo_assets.generator_key():
            return summary
    print(f"generating a tiny base model and adapters in {assets} (about six minutes on 2 cores, once)...", flush=True)
    return demo_assets.generate_in_child(assets)


def stage(spec: FleetSpec, summary: dict, store: AdapterStore) -> None:
    """Upload the generated base model and adapters to the sources ``spec`` names.

    Adapter ``<name>`` version ``<v>`` with source ``.../<name>/<v>`` is pushed from the generated
    adapter of the same name; buckets are created as needed (local S3 only).
    """
    buckets = {parse_s3_uri(b.source)[0] for b in spec.base_models if b.source.startswith("s3://")}
    buckets |= {parse_s3_uri(v.source)[0] for a in spec.adapters for v in a.versions}
    if spec.capture is not None:
        buckets.add(parse_s3_uri(spec.capture.destination)[0])
    for bucket in buckets:
        store.s3.create_bucket(Bucket=bucket)
    for base in spec.base_models:
        if base.source.startswith("s3://"):
            store.upload_dir(summary["base"], base.source)
    for adapter in spec.adapters:
        for v in adapter.versions:
            suffix = f"/{adapter.name}/{v.version}"
            if adapter.name in summary["adapters"] and v.source.endswith(suffix):
                store.push(summary["adapters"][adapter.name], adapter=adapter.name, version=v.version,
                           to=v.source[: -len(suffix)])


def tool_routes(spec: FleetSpec) -> list[str]:
    """Routes served by the demo's tool-calling specialist (they are asked with tools)."""
    return [r.name for r in spec.routes if any(t.adapter == "tools" for t in r.targets)]


def ask_every_route(spec: FleetSpec, base_url: str) -> list[tuple[str, str, str, str]]:
    """(route, served by, prompt, answer) for each route and demo prompt, via the OpenAI client; a request that
    fails is a row saying why (the demo goes on, and so does the fleet)."""
    from openai import APIError, OpenAI

    client = OpenAI(base_url=base_url, api_key=internal_key())
    rows = []
    for route in spec.routes:
        if route.name in tool_routes(spec):
            continue  # shown with tools, as an agent turn
        for prompt in DEMO_PROMPTS:
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=route.name, messages=[{"role": "user", "content": prompt}], max_tokens=24, temperature=0)
                answer = (raw.parse().choices[0].message.content or "").strip()
            except APIError as err:
                rows.append((route.name, "-", prompt, f"failed: {err.message}"))
                continue
            adapter, tier = raw.headers.get(h.ADAPTER), raw.headers.get(h.TIER_NAME)
            served = (f"tier {raw.headers.get(h.TIER)} {tier}" if tier else  # a cascade route
                      version_label(adapter, raw.headers.get(h.VERSION)) if adapter else
                      f"base {raw.headers.get(h.BASE_MODEL)}")
            rows.append((route.name, served, prompt, answer))
    return rows


def agent_turn(base_url: str, route: str) -> list[str]:
    """One full agent turn on a tool-calling route: the call, the tool run here, the final answer."""
    from openai import OpenAI

    from serving.local.demo_assets import DEMO_REQUEST, run_demo_tool

    client = OpenAI(base_url=base_url, api_key=internal_key())
    messages, tools = list(DEMO_REQUEST["messages"]), DEMO_REQUEST["tools"]
    lines = [f"user -> {route}: {messages[0]['content']!r}   (tools: "
             f"{', '.join(t['function']['name'] for t in tools)})"]
    first = client.chat.completions.create(model=route, messages=messages, tools=tools, max_tokens=48, temperature=0)
    message = first.choices[0].message
    if not message.tool_calls:
        return lines + [f"{route} answered text, not a call: {message.content!r}"]
    call = message.tool_calls[0]
    lines.append(f"{route} -> tool call: {call.function.name}({call.function.arguments})")
    result = run_demo_tool(call.function.name, json.loads(call.function.arguments))
    lines.append(f"demo runs the tool -> {result!r}")
    messages += [message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": result}]
    final = client.chat.completions.create(model=route, messages=messages, tools=tools, max_tokens=48, temperature=0)
    lines.append(f"{route} -> final answer: {final.choices[0].message.content.strip()!r}")
    return lines


def ask_with_pii(base_url: str, route: str) -> None:
    """One request with an e-mail address, a phone and a card number in it: its record shows them redacted."""
    from openai import OpenAI

    OpenAI(base_url=base_url, api_key=internal_key()).chat.completions.create(
        model=route, messages=[{"role": "user", "content": PII_PROMPT}], max_tokens=8, temperature=0)


def run_demo(*, fleet: str, assets: str, host: str, port: int, num_cpus: int, metrics_port: int | None = None,
             keys_file: str | None = None, **rollout_options) -> int:
    from serving.api.documents import load_fleet_file
    from serving.local.s3 import CREDENTIALS, local_s3
    from serving.local.serve import serve_until_stopped

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault(SECRET_ENV, CAPTURE_SECRET)  # before Ray starts: its workers inherit it
    spec = with_capture(load_fleet_file(fleet))
    summary = ensure_assets(assets)
    with local_s3() as s3_url:
        print(f"local S3 endpoint at {s3_url}", flush=True)
        try:
            stage(spec, summary, AdapterStore())
        except Exception as err:  # noqa: BLE001 - reported to the user, nothing else to clean up
            raise UserError(f"could not stage demo assets: {err}") from err

        def show(spec: FleetSpec) -> None:
            rows = ask_every_route(spec, f"http://{host}:{port}/v1")
            widths = [max(len(r[i]) for r in rows) for i in range(3)]
            print("\nroute".ljust(widths[0] + 1), "served by".ljust(widths[1]), "prompt".ljust(widths[2]), "answer")
            for r in rows:
                print(r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].ljust(widths[2]), r[3])
            print()
            if tool_routes(spec):
                print("an agent turn (tool call, tool result, answer):")
                for line in agent_turn(f"http://{host}:{port}/v1", tool_routes(spec)[0]):
                    print("  " + line)
                print()
            first = spec.routes[0].name
            ask_with_pii(f"http://{host}:{port}/v1", first)
            print(f"captured (redacted) to {CAPTURES}/: every request above, and one to {first} with PII in it:\n"
                  f"  {PII_PROMPT!r}\n"
                  "read the records (within about 10 s) with the demo's S3 environment:\n"
                  f"  export AWS_ENDPOINT_URL={s3_url} {' '.join(f'{k}={v}' for k, v in CREDENTIALS.items())} "
                  f"{SECRET_ENV}={os.environ[SECRET_ENV]}\n"
                  f"  .venv/bin/slm-fleet flywheel records {CAPTURES}/\n")
            auth = "" if spec.open else " -H \"authorization: Bearer $KEY\""
            if not spec.open:
                print(f"this fleet has tenants ({', '.join(t.name for t in spec.tenants)}): the requests above used "
                      "the fleet's own key; yours are the ones slm-fleet keys create printed (KEY below)")
            print("try it:\n"
                  f"  curl -s http://{host}:{port}/v1/chat/completions -H 'content-type: application/json'{auth} \\\n"
                  f"    -d '{{\"model\": \"{spec.routes[0].name}\", "
                  f"\"messages\": [{{\"role\": \"user\", \"content\": \"red fox\"}}]}}'\n")

        return serve_until_stopped(fleet, host=host, port=port, num_cpus=num_cpus, metrics_port=metrics_port,
                                   on_ready=show, adjust=with_capture, keys_file=keys_file, **rollout_options)
