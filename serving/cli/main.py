"""``slm-fleet``: validate, serve and inspect fleets; push and list adapters."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from serving.api.problems import FleetSpecError, UserError
from serving.cli import flywheel_commands
from serving.local.rollouts import DEFAULT_CONTROL_PORT, DEFAULT_TICK_SECONDS
from serving.render.serve_config import APP_NAME

EXIT_OK, EXIT_FAILED = 0, 1


def _user_errors() -> tuple[type[Exception], ...]:
    from serving.adapters.store import AdapterStoreError
    from serving.local.runtime import DeployError

    return (UserError, FleetSpecError, AdapterStoreError, DeployError)


def cmd_validate(args) -> int:
    from serving.adapters.store import AdapterStore, source_problems
    from serving.api.documents import load_fleet_file

    spec = load_fleet_file(args.file)
    if args.sources:
        problems = source_problems(spec, AdapterStore())
        if problems:
            raise FleetSpecError(problems, args.file)
    adapters = sum(len(a.versions) for a in spec.adapters)
    checked = " (adapter sources checked)" if args.sources else ""
    print(f"{args.file}: valid: {len(spec.base_models)} base model(s), {len(spec.adapters)} adapter(s) "
          f"with {adapters} version(s), {len(spec.routes)} route(s){checked}")
    if spec.open:
        print("open fleet: no tenants declared, so every route answers anyone without an API key")
    else:
        print(f"{len(spec.tenants)} tenant(s): " + "; ".join(
            f"{t.name} ({', '.join(t.routes)})" for t in spec.tenants) + "; every API call needs a key")
    return EXIT_OK


def _write_keys(path, text: str) -> None:
    """Replace the keys file at once (a router rereading it never sees half of it), readable by its owner only."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def cmd_keys(args) -> int:
    from pathlib import Path

    from serving.api.keys import KeysFileError, format_keys, key_id, new_entry, new_key, parse_keys

    path = Path(args.file) if getattr(args, "file", None) else None
    entries = parse_keys(path.read_text(), source=str(path)) if path is not None and path.exists() else []
    if args.keys_command == "create":
        key = new_key()
        entry = new_entry(args.tenant, key)
        if path is None:
            print(f"{key}\n\nadd this entry to the keys file (the key above is shown only now):\n"
                  + format_keys([entry]).split("\n", 2)[2], end="")
            return EXIT_OK
        _write_keys(path, format_keys([*entries, entry]))
        print(key)
        print(f"(tenant {args.tenant}, {entry.id}; its sha256 added to {path}; the key is shown only now)",
              file=sys.stderr)
        return EXIT_OK
    if args.keys_command == "list":
        for e in entries:
            print(f"{e.id}  {e.tenant}  {e.created or ''}".rstrip())
        return EXIT_OK
    kept = [e for e in entries if e.id != args.key_id and key_id(e.sha256) != args.key_id]
    if len(kept) == len(entries):
        raise KeysFileError(f"{path} has no key {args.key_id}; its keys: {', '.join(e.id for e in entries) or 'none'}")
    _write_keys(path, format_keys(kept))
    print(f"revoked {args.key_id} (the router rereads {path} within seconds)")
    return EXIT_OK


def cmd_serve_config(args) -> int:
    from serving.api.documents import load_fleet_file
    from serving.render.serve_config import serve_config

    if not args.route_prefix.startswith("/"):
        raise UserError(f"--route-prefix {args.route_prefix!r} must start with '/' (e.g. /team-a)")
    spec = load_fleet_file(args.file)
    config = serve_config(spec, host=args.host, port=args.port, app_name=args.app_name, route_prefix=args.route_prefix)
    print(yaml.safe_dump(config, sort_keys=False), end="")
    return EXIT_OK


def cmd_crd(args) -> int:
    from operators.crd import crd_yaml

    print(crd_yaml(), end="")
    return EXIT_OK


def cmd_render(args) -> int:
    from operators.render import rayservice_yaml, render_rayservice
    from operators.settings import OperatorSettings, SettingsError
    from serving.api.documents import read_fleet_file

    spec, metadata = read_fleet_file(args.file)
    name = args.name or metadata.get("name")
    if not name:
        raise UserError(f"{args.file}: a bare spec has no metadata.name; pass --name NAME for the RayService")
    namespace = args.namespace or metadata.get("namespace") or "default"
    try:
        settings = OperatorSettings.from_env()
    except SettingsError as err:
        raise UserError(str(err)) from None
    rayservice = render_rayservice(spec, name=name, namespace=namespace, settings=settings)
    print(rayservice_yaml(rayservice), end="")
    return EXIT_OK


def cmd_serve(args) -> int:
    from serving.local.serve import serve_until_stopped

    return serve_until_stopped(args.file, host=args.host, port=args.port, num_cpus=args.num_cpus,
                               metrics_port=args.metrics_port, prometheus_url=args.prometheus_url,
                               control_port=args.control_port, rollout_tick_s=args.rollout_tick, keys_file=args.keys)


def cmd_rollout(args) -> int:
    from serving.cli.rollout_control import fleet_control

    control = fleet_control(args)
    if args.rollout_command == "status":
        statuses = control.status()
        if args.json:
            print(json.dumps(statuses, indent=2))
            return EXIT_OK
        if not statuses:
            print("no rollouts: no route of this fleet has a strategy.canary")
            return EXIT_OK
        print(_rollout_table(statuses))
        return EXIT_OK
    command = f"{args.rollout_command} {args.route}" if args.route else args.rollout_command
    print(control.send(command))
    return EXIT_OK


def _rollout_table(statuses: list[dict]) -> str:
    rows = [("ROUTE", "CANARY", "STABLE", "PHASE", "STEP", "WEIGHT", "REASON")]
    rows += [(s["route"], s["canary"], s["stable"], s["phase"], _step(s["step"], s["steps"]), f"{s['weight']}%",
              s.get("reason", "")) for s in statuses]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join([c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]).rstrip() for r in rows]
    for s in statuses:
        lines.append(f"\nhistory of {s['route']} ({s['canary']}):")
        lines += [f"  {h['time']}  {h['phase']:<11} {_step(h['step']):<7} {h['weight']:>3}%  {h.get('reason', '')}"
                  for h in s.get("history", [])]
    return "\n".join(lines)


def _step(step: int, steps: int | None = None) -> str:
    """A rollout's step for people: "shadow" for the shadow phase (step 0), else "step 2" or "2/4"."""
    if step == 0:
        return "shadow"
    return f"{step}/{steps}" if steps else f"step {step}"


def cmd_adapters_push(args) -> int:
    from serving.adapters.store import AdapterStore

    try:
        stored = AdapterStore().push(args.dir, adapter=args.adapter, version=args.version, to=args.to)
    except ValueError as err:  # AdapterConfigError, or a --to that is no S3 URI
        raise UserError(f"not pushed: {err}") from None
    print(f"pushed {stored.adapter} {stored.version} to {stored.uri}\nsha256: {stored.sha256}")
    return EXIT_OK


def cmd_adapters_list(args) -> int:
    from serving.adapters.store import AdapterStore

    try:
        stored = AdapterStore().list(args.uri)
    except ValueError as err:  # not an S3 URI
        raise UserError(str(err)) from None
    if args.json:
        print(json.dumps([s.__dict__ for s in stored], indent=2))
        return EXIT_OK
    rows = [("ADAPTER", "VERSION", "BASE", "RANK", "SHA256", "SOURCE")]
    rows += [(s.adapter, s.version, s.base_model or "-", str(s.rank or "-"), (s.sha256 or "-")[:12], s.uri)
             for s in stored]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return EXIT_OK


def cmd_demo_assets(args) -> int:
    from serving.local.demo_assets import generate

    summary = generate(args.dir)
    if args.families:
        from serving.local import family_assets

        summary["families"] = family_assets.generate(Path(args.dir) / "families", summary["base"])["families"]
    print(json.dumps(summary, indent=2))
    return EXIT_OK


def cmd_demo(args) -> int:
    from serving.local.demo import run_demo

    return run_demo(fleet=args.file, assets=args.assets, host=args.host, port=args.port, num_cpus=args.num_cpus,
                    metrics_port=args.metrics_port, prometheus_url=args.prometheus_url, control_port=args.control_port,
                    rollout_tick_s=args.rollout_tick, keys_file=args.keys)


MCP_HELP = """\
The fleet serves its routes as MCP tools at <fleet URL>/mcp (streamable HTTP, stateless: any
router replica answers). Point an MCP client at that URL; a client config file takes, e.g.:
  {"mcpServers": {"slm-fleet": {"type": "http", "url": "http://127.0.0.1:8000/mcp"}}}
Each tool takes a prompt (or messages) and optional max_tokens and temperature, and answers the
text with who served it. This command lists the tools a running fleet offers."""


def cmd_mcp(args) -> int:
    import asyncio

    from serving.local.mcp_client import list_tools

    url = args.url.rstrip("/") + "/mcp"
    try:
        tools = asyncio.run(list_tools(url))
    except Exception as err:  # noqa: BLE001 - any failure to reach the fleet is the user's to fix
        while isinstance(err, BaseExceptionGroup) and err.exceptions:  # the SDK's task groups wrap the cause
            err = err.exceptions[0]
        raise UserError(f"no MCP answer from {url}: {type(err).__name__}: {err}; is the fleet serving there "
                        "(slm-fleet serve / make demo)?") from None
    print(json.dumps({"mcpServers": {"slm-fleet": {"type": "http", "url": url}}}))
    width = max((len(name) for name, _ in tools), default=0)
    for name, description in tools:
        print(f"  {name.ljust(width)}  {description}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slm-fleet", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check a fleet file (a ModelFleet manifest or a bare spec)")
    v.add_argument("file")
    v.add_argument("--sources", action="store_true",
                   help="also read each adapter version's adapter_config.json from S3 and check base and rank")
    v.set_defaults(fn=cmd_validate)

    def metrics_arg(sp):
        sp.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus metrics (Ray's and the fleet's ray_slmfleet_*) on this port")

    def rollout_args(sp):
        sp.add_argument("--prometheus-url", default=None,
                        help="read canary metrics from this Prometheus (default: the fleet's own metrics endpoint)")
        sp.add_argument("--control-port", type=int, default=None,
                        help="loopback port of the rollout control endpoint `slm-fleet rollout` uses "
                             f"(default {DEFAULT_CONTROL_PORT})")
        sp.add_argument("--rollout-tick", type=float, default=DEFAULT_TICK_SECONDS, metavar="SECONDS",
                        help=f"how often canary rollouts are evaluated (default {DEFAULT_TICK_SECONDS:g})")

    def serving_args(sp, port=8000):
        sp.add_argument("--host", default="127.0.0.1")
        sp.add_argument("--port", type=int, default=port)

    def keys_arg(sp):
        sp.add_argument("--keys", default=None, metavar="FILE",
                        help="the tenants' API keys (hashes), as slm-fleet keys create writes them; reread when "
                             "the file changes")

    sc = sub.add_parser("serve-config", help="print the Ray Serve config (serveConfigV2) for a fleet")
    sc.add_argument("file")
    serving_args(sc)
    sc.add_argument("--app-name", default=APP_NAME,
                    help=f"Ray Serve application name (default {APP_NAME}); another name lets a fleet share a Ray "
                         "cluster with other applications")
    sc.add_argument("--route-prefix", default="/", help="HTTP path the fleet's API is served under (default /)")
    sc.set_defaults(fn=cmd_serve_config, host="0.0.0.0")

    c = sub.add_parser("crd", help="print the ModelFleet CustomResourceDefinition (generated from the spec)")
    c.set_defaults(fn=cmd_crd)

    r = sub.add_parser(
        "render", help="print the KubeRay RayService the operator applies for a fleet (for review and GitOps)",
        description="Print the RayService the operator would apply. Ray image, versions and pod sizes come from "
                    "the same SLMFLEET_* variables the operator reads (see `helm/slm-fleet/values.yaml`).")
    r.add_argument("file")
    r.add_argument("--name", help="RayService name (default: the manifest's metadata.name)")
    r.add_argument("--namespace", help="namespace (default: the manifest's metadata.namespace, else 'default')")
    r.set_defaults(fn=cmd_render)

    s = sub.add_parser("serve", help="run a fleet on a local Ray instance until interrupted")
    s.add_argument("file")
    serving_args(s)
    s.add_argument("--num-cpus", type=int, default=None, help="logical CPUs for the local Ray instance")
    metrics_arg(s)
    rollout_args(s)
    keys_arg(s)
    s.set_defaults(fn=cmd_serve)

    k = sub.add_parser("keys", help="make, list and revoke tenants' API keys (a keys file of sha256 hashes)")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kc = ksub.add_parser("create", help="make a key for a tenant, print it once, and add its hash to the keys file")
    kc.add_argument("--tenant", required=True, help="the tenant (spec.tenants[].name) the key belongs to")
    kc.add_argument("--file", default=None, help="the keys file to add it to (created if missing); without it, the "
                    "entry is printed")
    kl = ksub.add_parser("list", help="the keys of a keys file: id, tenant, created")
    kl.add_argument("--file", required=True)
    kr = ksub.add_parser("revoke", help="remove a key (by its id, key-xxxxxxxx) from the keys file")
    kr.add_argument("key_id", metavar="KEY_ID")
    kr.add_argument("--file", required=True)
    k.set_defaults(fn=cmd_keys)

    ro = sub.add_parser(
        "rollout", help="status and controls of canary rollouts (local `slm-fleet serve`, or a ModelFleet)",
        description="Show or steer the canary rollouts of a fleet: one served by `slm-fleet serve` (its control "
                    "endpoint, --control) or a ModelFleet on Kubernetes (--fleet, through the slmfleet.io/rollout "
                    "annotation the operator reads).")
    rsub = ro.add_subparsers(dest="rollout_command", required=True)
    for name, text in (("status", "phase, step, weight, last analysis and history of each rollout"),
                       ("pause", "hold the canary at its current weight"),
                       ("resume", "go on from a pause (the step's interval starts again)"),
                       ("promote", "give the canary 100%% now"),
                       ("abort", "roll the canary back to 0%% now")):
        cp = rsub.add_parser(name, help=text)
        if name != "status":
            cp.add_argument("route", nargs="?", help="the route (default: every rollout of the fleet)")
        else:
            cp.add_argument("--json", action="store_true")
        cp.add_argument("--control", default=None, metavar="URL",
                        help=f"a local fleet's control endpoint (default http://127.0.0.1:{DEFAULT_CONTROL_PORT})")
        cp.add_argument("--fleet", default=None, metavar="NAME", help="a ModelFleet on Kubernetes (kubeconfig)")
        cp.add_argument("-n", "--namespace", default=None, help="its namespace (default: the kubeconfig's)")
        cp.set_defaults(fn=cmd_rollout, route=None)

    a = sub.add_parser("adapters", help="push and list adapter versions in S3")
    asub = a.add_subparsers(dest="adapters_command", required=True)
    push = asub.add_parser("push", help="upload a PEFT LoRA adapter directory as a new version")
    push.add_argument("dir")
    push.add_argument("--adapter", required=True)
    push.add_argument("--version", required=True)
    push.add_argument("--to", required=True, metavar="s3://bucket/prefix")
    push.set_defaults(fn=cmd_adapters_push)
    ls = asub.add_parser("list", help="list adapter versions under an S3 prefix")
    ls.add_argument("uri", metavar="s3://bucket/prefix")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=cmd_adapters_list)

    d = sub.add_parser("demo-assets", help="generate a tiny base model and task adapters")
    d.add_argument("dir")
    d.add_argument("--families", action="store_true",
                   help="also write a tiny base of each SLM family's architecture (Llama, Qwen3, Phi-3, Gemma 3, "
                        "SmolLM3, Mistral) with a LoRA adapter under DIR/families")
    d.set_defaults(fn=cmd_demo_assets)

    m = sub.add_parser("mcp", help="the fleet's routes as MCP tools: the client config and the tool list",
                       description=MCP_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("--url", default="http://127.0.0.1:8000", help="the fleet's URL (default: %(default)s)")
    m.set_defaults(fn=cmd_mcp)

    flywheel_commands.add_parser(sub)

    demo = sub.add_parser("demo", help="run the quickstart fleet locally with a local S3 endpoint")
    demo.add_argument("--file", default="manifests/examples/quickstart.yaml")
    demo.add_argument("--assets", default=".demo/assets")
    serving_args(demo)
    demo.add_argument("--num-cpus", type=int, default=4)
    metrics_arg(demo)
    rollout_args(demo)
    keys_arg(demo)
    demo.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except _user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
