"""``slm-fleet flywheel``: from captured traffic to a new specialist, one S3-reading step per command."""

from __future__ import annotations

import argparse
import json
import os
import sys

from serving.api.capture import SECRET_ENV
from serving.api.fields import DURATION_PATTERN, duration_seconds
from serving.api.problems import UserError
from serving.api.routes import CanaryShadow

EXIT_OK = 0

FLYWHEEL_HELP = """\
Each step reads and writes S3 (the demo's local S3 too: use the AWS_* environment `make demo`
prints). SRC is where the fleet's capture section writes, e.g. s3://slmfleet-demo/captures."""


def _duration(text: str) -> str:
    import re

    if not re.match(DURATION_PATTERN, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 12h, 30d")
    return text


def cmd_records(args) -> int:
    from serving.flywheel.records import CaptureStore, ReadStats, parse_since

    stats = ReadStats()
    since = parse_since(args.since) if args.since else None
    for rec in CaptureStore().read(args.src, route=args.route, since=since, stats=stats):
        print(json.dumps(rec, ensure_ascii=False))
    print(stats.summary(), file=sys.stderr)
    return EXIT_OK


def prune_target(src: str | None, older_than: str | None, fleet_file: str | None) -> tuple[str, str]:
    """(where, how old) to prune: as given, else the fleet file's capture destination and retention."""
    if fleet_file is not None:
        from serving.api.documents import load_fleet_file

        capture = load_fleet_file(fleet_file).capture
        if capture is None:
            raise UserError(f"{fleet_file} has no capture section; give SRC and --older-than")
        return src or capture.destination, older_than or capture.retention
    if src is None or older_than is None:
        raise UserError("give SRC and --older-than D, or --fleet FILE to take the capture's destination and "
                        "retention from a fleet file")
    return src, older_than


def cmd_prune(args) -> int:
    from serving.flywheel.records import CaptureStore, lifecycle_rule

    src, older_than = prune_target(args.src, args.older_than, args.fleet)
    if args.lifecycle:
        print(json.dumps(lifecycle_rule(src, duration_seconds(older_than)), indent=2))
        return EXIT_OK
    deleted = CaptureStore().prune(src, duration_seconds(older_than))
    print(f"deleted {deleted} object(s) older than {older_than} under {src}")
    return EXIT_OK


def cmd_forget(args) -> int:
    from serving.flywheel.records import CaptureStore
    from serving.policy.capture import forget_ids

    secret = os.environ.get(args.secret_env)
    if not secret:
        raise UserError(f"{args.secret_env} is not set: callerIds are keyed with the router's capture secret; set it "
                        "to the same value (or pass --secret-env NAME)")
    changed, removed = CaptureStore().forget(args.src, forget_ids(secret.encode(), args.caller))
    print(f"removed {removed} record(s) of that caller from {changed} object(s) under {args.src}")
    return EXIT_OK


def _records(src: str, route: str | None = None, since: str | None = None) -> list[dict]:
    from serving.flywheel.records import CaptureStore, ReadStats, parse_since

    stats = ReadStats()
    records = list(CaptureStore().read(src, route=route, since=parse_since(since) if since else None, stats=stats))
    print(f"read {stats.summary()}", file=sys.stderr)
    return records


def cmd_clusters(args) -> int:
    from serving.flywheel import artifacts
    from serving.flywheel.clusters import find_clusters

    records = [r for r in _records(args.src, args.route, args.since) if r.get("traffic", "live") == "live"]
    if not records:
        raise UserError(f"no captured records under {args.src}{' for route ' + args.route if args.route else ''}: "
                        "is capture on for the route (the fleet's capture section), and has traffic arrived?")
    report, png = find_clusters(records, embedding=args.embedding, min_cluster_size=args.min_cluster_size)
    report["source"] = args.src
    to = args.to or artifacts.join(args.src.rstrip("/") + "-flywheel", "clusters")
    artifacts.put_json(artifacts.join(to, "clusters.json"), report)
    artifacts.put(artifacts.join(to, "clusters.png"), png, content_type="image/png")
    print(f"{report['records']} request(s), {len(report['clusters'])} cluster(s) ({report['embedding']}), "
          f"{report['noise']['size']} noise")
    for c in report["clusters"] + [{"cluster": "noise", "topTerms": [], **report["noise"]}]:
        print(f"\ncluster {c['cluster']}: {c['size']} request(s), {c['share']:.0%} of traffic, "
              f"{c['escalatedShare']:.0%} escalated to the last tier")
        if c["topTerms"]:
            print(f"  top terms: {', '.join(c['topTerms'])}")
        for ex in c["examples"][:3]:
            print(f"  e.g. {ex[:100]!r}")
    print(f"\nwrote {artifacts.join(to, 'clusters.json')} and clusters.png")
    return EXIT_OK


def cmd_dataset(args) -> int:
    from serving.flywheel import artifacts, datasets

    cluster = None
    if args.cluster is not None:
        if not args.clusters:
            raise UserError("--cluster C takes its requests from a clusters.json: give --clusters URI "
                            "(what `flywheel clusters` wrote)")
        report = artifacts.get_json(args.clusters, what="clusters.json `flywheel clusters` wrote")
        found = [c for c in report.get("clusters", []) if str(c.get("cluster")) == str(args.cluster)]
        if not found:
            ids = ", ".join(str(c.get("cluster")) for c in report.get("clusters", [])) or "none"
            raise UserError(f"{args.clusters} has no cluster {args.cluster} (clusters: {ids})")
        cluster = {"cluster": found[0]["cluster"], "clusters": args.clusters, "topTerms": found[0].get("topTerms")}
        wanted = set(found[0].get("recordIds") or [])
        records = [r for r in _records(args.src, args.route) if r.get("id") in wanted]
    else:
        records = _records(args.src, args.route)
    train, evals, counts = datasets.build(records, answers=args.answers, eval_share=args.eval_share, seed=args.seed,
                                          near=args.near, min_examples=args.min_examples)
    route = args.route or (sorted({r.get("route") for r in records})[0] if len({r.get("route") for r in records}) == 1
                           else None)
    manifest = datasets.manifest(source=args.src, route=route, cluster=cluster, answers=args.answers,
                                 eval_share=args.eval_share, seed=args.seed, near=args.near, counts=counts,
                                 records=records, train=train, evals=evals)
    artifacts.put_jsonl(artifacts.join(args.to, "train.jsonl"), train)
    artifacts.put_jsonl(artifacts.join(args.to, "eval.jsonl"), evals)
    artifacts.put_json(artifacts.join(args.to, "manifest.json"), manifest)
    skipped = ", ".join(f"{n} {why}" for why, n in counts["skipped"].items()) or "none"
    print(f"dataset {args.to}: {counts['train']} train, {counts['eval']} eval from {counts['records']} record(s) "
          f"({counts['exactDuplicates']} exact and {counts['nearDuplicates']} near duplicate(s) removed; "
          f"left out: {skipped})")
    return EXIT_OK


def _dataset(uri: str) -> tuple[list[dict], list[dict], dict]:
    from serving.flywheel import artifacts

    manifest = artifacts.get_json(artifacts.join(uri, "manifest.json"), what="manifest of a flywheel dataset")
    if manifest.get("kind") != "slmfleet.dataset":
        raise UserError(f"{uri}/manifest.json is not a flywheel dataset's manifest (make one with `flywheel dataset`)")
    return (artifacts.get_jsonl(artifacts.join(uri, "train.jsonl")), artifacts.get_jsonl(artifacts.join(uri,
            "eval.jsonl")), manifest)


def _base_source(base: str, fleet_file: str | None) -> tuple[str, str]:
    """(name, S3 source) of --base: a base model of --fleet, or an s3:// URI."""
    if base.startswith("s3://"):
        return base.rstrip("/").rsplit("/", 1)[-1], base
    if not fleet_file:
        raise UserError(f"--base {base!r} is a base model's name: give --fleet FILE to find its source, or pass its "
                        "s3:// source")
    from serving.api.documents import load_fleet_file

    spec = load_fleet_file(fleet_file)
    for b in spec.base_models:
        if b.name == base:
            return b.name, b.source
    raise UserError(f"{fleet_file} has no base model '{base}' (base models: "
                    f"{', '.join(b.name for b in spec.base_models)})")


def _start_source(start_from: str, fleet_file: str | None, base_name: str) -> tuple[str, str | None]:
    """(S3 source, sha256) of --start-from: ADAPTER@VERSION of --fleet (on --base), or an s3:// URI."""
    if start_from.startswith("s3://"):
        return start_from.rstrip("/"), None
    adapter, version = _parse_version(start_from, "--start-from", "assistant@v1, or its s3:// source")
    if not fleet_file:
        raise UserError(f"--start-from {start_from}: give --fleet FILE, the fleet that declares it, or its s3:// "
                        "source")
    from serving.api.documents import load_fleet_file

    for a in load_fleet_file(fleet_file).adapters:
        if a.name == adapter:
            if a.base_model != base_name:
                raise UserError(f"--start-from {start_from}: adapter '{adapter}' is trained on base '{a.base_model}', "
                                f"not --base {base_name}; start from an adapter of that base")
            for v in a.versions:
                if v.version == version:
                    return v.source.rstrip("/"), v.sha256
            raise UserError(f"--start-from {start_from}: adapter '{adapter}' declares no version '{version}' "
                            f"(versions: {', '.join(v.version for v in a.versions)})")
    raise UserError(f"--start-from {start_from}: {fleet_file} has no adapter '{adapter}'")


def cmd_train(args) -> int:
    import tempfile
    from dataclasses import asdict

    from serving.adapters.store import AdapterStore, AdapterStoreError
    from serving.flywheel.training import TrainSettings, cached_base, lineage, train_lora

    settings = TrainSettings(rank=args.rank, alpha=args.alpha, learning_rate=args.lr, epochs=args.epochs,
                             steps=args.steps, batch_size=args.batch_size, max_length=args.max_length, seed=args.seed)
    if settings.problems():
        raise UserError("; ".join(settings.problems()))
    base_name, base_source = _base_source(args.base, args.fleet)
    start_source, start_sha = _start_source(args.start_from, args.fleet, base_name) if args.start_from else (None, None)
    if args.render == "rayjob":
        from operators.render import rayjob_yaml, render_training_rayjob, training_entrypoint
        from operators.settings import OperatorSettings, SettingsError

        try:
            operator_settings = OperatorSettings.from_env()
        except SettingsError as err:
            raise UserError(str(err)) from None
        entrypoint = training_entrypoint(dataset=args.dataset, base_source=base_source, adapter=args.adapter,
                                         version=args.version, to=args.to, settings=asdict(settings),
                                         start_from=start_source)
        print(rayjob_yaml(render_training_rayjob(
            name=args.job_name or f"train-{args.adapter}-{args.version}".lower().replace("_", "-"),
            namespace=args.namespace, settings=operator_settings, entrypoint=entrypoint, gpus=args.gpus)), end="")
        return EXIT_OK
    train, _, manifest = _dataset(args.dataset)
    store = AdapterStore()
    with tempfile.TemporaryDirectory(prefix="slmfleet-train-") as out, \
            tempfile.TemporaryDirectory(prefix="slmfleet-start-") as start_dir:
        if args.ray_train:
            from serving.flywheel.training import train_in_ray

            run = train_in_ray(train, base_source, out, settings, base_name=base_name, gpus=args.gpus,
                               start_from=start_source, start_sha256=start_sha)
        else:
            if start_source is not None:
                try:
                    store.download(start_source, start_dir, sha256=start_sha)
                except AdapterStoreError as err:
                    raise UserError(f"--start-from {args.start_from}: {err}") from None
            run = train_lora(train, cached_base(base_source, store), out, settings, base_name=base_name,
                             start_from=start_dir if start_source else None, progress=not args.quiet)
        stored = store.push(out, adapter=args.adapter, version=args.version, to=args.to,
                            lineage=lineage(dataset=args.dataset, dataset_manifest=manifest, base_name=base_name,
                                            base_source=base_source, settings=settings, run=run,
                                            start_from=start_source))
    print(f"trained {args.adapter}@{args.version} on {run['examples']} example(s) in {run['seconds']} s "
          f"({run['steps']} steps, final loss {run['finalLoss']})\npushed to {stored.uri}\nsha256: {stored.sha256}")
    return EXIT_OK


def _parse_version(text: str, flag: str = "--candidate", example: str = "student@v2") -> tuple[str, str]:
    """(adapter, version) of an ADAPTER@VERSION option."""
    adapter, _, version = text.partition("@")
    if not adapter or not version:
        raise UserError(f"{flag} {text!r}: name it ADAPTER@VERSION, e.g. {example}")
    return adapter, version


def _candidate_source(spec, adapter: str, version: str, given: str | None) -> str:
    """Where the candidate was pushed: --candidate-source, else in the store the adapter's declared versions are
    in (``<root>/<adapter>/<version>``, the layout `adapters push` and `flywheel train --to <root>` write)."""
    if given:
        return given.rstrip("/")
    for a in spec.adapters:
        if a.name == adapter and a.versions:
            return f"{a.versions[-1].source.rstrip('/').rsplit('/', 2)[0]}/{adapter}/{version}"
    raise UserError(f"the fleet declares no adapter '{adapter}' to find the candidate beside: give "
                    "--candidate-source s3://…")


def cmd_evaluate(args) -> int:
    from serving.adapters.store import AdapterStore
    from serving.api.documents import load_fleet_file
    from serving.api.fields import version_label
    from serving.flywheel import artifacts
    from serving.flywheel.evaluation import (
        DEFAULT_MAX_TASK_DROP,
        DEFAULT_THRESHOLD,
        Generator,
        first_tier,
        judge,
        parse_answer,
        regression_text,
        regressions,
        scores,
        table,
        task_labels,
        task_scores,
    )
    from serving.flywheel.training import cached_base

    _, evals, manifest = _dataset(args.dataset)
    if not evals:
        raise UserError(f"{args.dataset} has an empty eval split")
    spec = load_fleet_file(args.fleet)
    route_name = args.route or manifest.get("route")
    if not route_name:
        raise UserError("the dataset names no single route; give --route R (the cascade route it came from)")
    route, tier, tier_adapter, tier_version = first_tier(spec, route_name)
    adapter, version = _parse_version(args.candidate)
    store = AdapterStore()
    source = _candidate_source(spec, adapter, version, args.candidate_source)
    candidate_base = store.read_config(source).base_model
    adapters = {a.name: a for a in spec.adapters}
    base_name = adapters[tier_adapter].base_model if tier_adapter else tier.base_model
    if candidate_base and base_name and candidate_base != base_name:
        raise UserError(f"{args.candidate} was trained on base '{candidate_base}', but the first tier of "
                        f"'{route_name}' runs on '{base_name}': train the candidate with --base {base_name}")
    base = next(b for b in spec.base_models if b.name == base_name)
    generator = Generator(cached_base(base.source, store))
    call = "completion" if "prompt" in evals[0] else "chat"
    labels = (task_labels(artifacts.get_json(args.clusters, what="clusters.json `flywheel clusters` wrote"))
              if args.clusters else None)
    results, judged_by_role = {}, {}
    import tempfile

    contenders = [("candidate", version_label(adapter, version), source)]
    if tier_adapter:
        tier_source = next(v.source for v in adapters[tier_adapter].versions if v.version == tier_version)
        contenders.append(("firstTier", version_label(tier_adapter, tier_version), tier_source))
    else:
        contenders.append(("firstTier", f"base {base_name}", None))
    for role, label, src in contenders:
        with tempfile.TemporaryDirectory(prefix="slmfleet-eval-") as where:
            if src is not None:
                store.download(src, where)
            raws = generator.answers(where if src is not None else None, evals, max_new_tokens=args.max_tokens)
        judged = judged_by_role[role] = [judge(ex, parse_answer(raw, call), tier.checks)
                                         for ex, raw in zip(evals, raws)]
        results[role] = {"label": label, "source": src, **scores(judged),
                         "passed": [i for i, (ok, _) in enumerate(judged) if ok]}
    teacher = [judge(ex, {"choices": [{"text": ex.get("completion"), "finish_reason": "stop"}]} if call != "chat"
                     else {"choices": [{"message": ex["messages"][-1], "finish_reason": "stop"}]}, tier.checks)
               for ex in evals]
    results["teacher"] = {"label": f"{route.tiers[-1].describe()} (recorded)", "source": None, **scores(teacher)}
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    max_drop = DEFAULT_MAX_TASK_DROP if args.max_task_drop is None else args.max_task_drop
    tasks = task_scores(evals, judged_by_role, labels) if labels is not None else None
    worse = regressions(tasks, max_drop) if tasks is not None else []
    report = {"kind": "slmfleet.evaluation", "dataset": args.dataset, "route": route_name,
              "candidate": results["candidate"], "firstTier": results["firstTier"], "teacher": results["teacher"],
              "checks": tier.checks.model_dump(by_alias=True, exclude_defaults=True), "threshold": threshold,
              "tasks": tasks, "maxTaskDrop": max_drop, "regressions": worse,
              "passed": results["candidate"]["passShare"] >= threshold and not worse,
              "candidateAdapter": adapter, "candidateVersion": version, "candidateSource": source,
              "candidateSha256": store.read_manifest(source).get("sha256")}
    to = args.to or artifacts.join(args.dataset, f"evaluation-{adapter}-{version}.json")
    artifacts.put_json(to, report)
    print(table(report))
    share = results["candidate"]["passShare"]
    print(f"\n{args.candidate} {'passes' if share >= threshold else 'does not pass'} the threshold {threshold:g} "
          "(share passing the first tier's checks)")
    if tasks is None:
        print("not judged task by task: give --clusters (what `flywheel clusters` wrote) to refuse a candidate that "
              "gets worse than the first tier at one of the route's tasks")
    elif worse:
        print(f"{args.candidate} does worse than the first tier task by task: {regression_text(args.candidate, worse)}")
    else:
        print(f"{args.candidate} is no worse than the first tier on any of the {len(tasks)} task(s)"
              + (f" (by more than {max_drop:g})" if max_drop else ""))
    print(f"wrote {to}")
    return EXIT_OK


def _shadow_of(args) -> dict | None:
    """The canary's shadow phase (spec form) from propose's options; None with --no-shadow."""
    given = {"duration": args.shadow, "share": args.shadow_share, "minRequests": args.shadow_min_requests,
             "minAgreement": args.shadow_min_agreement}
    given = {k: v for k, v in given.items() if v is not None}
    if args.no_shadow:
        if given:
            raise UserError("--no-shadow starts the canary at its first step: drop the --shadow* options with it")
        return None
    return given


def cmd_propose(args) -> int:
    import yaml

    from serving.adapters.store import AdapterStore
    from serving.api.documents import fleet_from_document
    from serving.flywheel import artifacts
    from serving.flywheel.evaluation import DEFAULT_THRESHOLD, first_tier, regression_text
    from serving.flywheel.proposals import pick_probes, propose

    if (args.fleet is None) == (args.modelfleet is None):
        raise UserError("propose to a fleet file (FLEET) or to a ModelFleet on Kubernetes (--modelfleet NAME): "
                        "give one")
    adapter, version = _parse_version(args.candidate)
    report = artifacts.get_json(args.evaluation, what="evaluation `flywheel evaluate` wrote")
    if (report.get("candidateAdapter"), report.get("candidateVersion")) != (adapter, version):
        raise UserError(f"{args.evaluation} evaluated {report.get('candidateAdapter')}@{report.get('candidateVersion')}"
                        f", not {args.candidate}")
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    share = report["candidate"]["passShare"]
    if share < threshold:
        raise UserError(f"{args.candidate} passed the first tier's checks on {share:.0%} of the eval split, under the "
                        f"threshold {threshold:.0%}: not proposed. Train on more data (or lower --threshold)")
    if report.get("regressions"):
        raise UserError(f"{args.candidate} does worse than the first tier at a task the route already serves "
                        f"({regression_text(args.candidate, report['regressions'])}): not proposed. Train on more of "
                        "that task's accepted answers (flywheel dataset --answers accepted), or longer, and evaluate "
                        "again")
    if args.modelfleet:
        from serving.cli.rollout_control import KubeControl

        kube = KubeControl(args.modelfleet, args.namespace)
        doc, where = kube.document(), f"ModelFleet {kube.namespace}/{kube.name}"
    else:
        with open(args.fleet) as f:
            doc, where = yaml.safe_load(f), args.fleet
    spec = fleet_from_document(doc, source=where)
    route_name = args.route or report.get("route")
    _, tier, _, _ = first_tier(spec, route_name)
    canary_route = tier.route or route_name
    _, evals, _ = _dataset(report["dataset"])
    passed = report["candidate"].get("passed")
    probes = pick_probes([evals[i] for i in passed] if passed is not None else evals, tier.checks,
                         args.probe_max_tokens)
    new = propose(doc, canary_route=canary_route, adapter=adapter, version=version, source=report["candidateSource"],
                  sha256=report.get("candidateSha256"), probes=probes, interval=args.interval, steps=args.steps,
                  shadow=_shadow_of(args))
    fleet_from_document(new, source=f"{where} with the proposal")  # refuses what would not validate
    store = AdapterStore()
    stored = store.read_manifest(report["candidateSource"])
    stored.setdefault("lineage", {})["proposal"] = {"threshold": threshold, "passShare": share,
                                                     "evaluation": args.evaluation, "route": canary_route}
    store.write_manifest(report["candidateSource"], stored)
    if args.modelfleet:
        kube.update_spec(new["spec"], ("adapters", "routes"))
    else:
        with open(args.fleet, "w") as f:
            yaml.safe_dump(new, f, sort_keys=False)
    print(f"proposed {args.candidate} on route '{canary_route}' in {where}: a canary with {len(probes)} probe(s) "
          f"(passed {share:.0%} >= threshold {threshold:.0%}; recorded in its lineage)")
    return EXIT_OK

def add_parser(sub) -> None:
    fw = sub.add_parser("flywheel", help="captured traffic -> clusters -> dataset -> specialist -> canary",
                        description=FLYWHEEL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    fsub = fw.add_subparsers(dest="flywheel_command", required=True)

    r = fsub.add_parser("records", help="print captured records as JSON lines (a summary on stderr)")
    r.add_argument("src", metavar="SRC")
    r.add_argument("--route", help="only this route's records")
    r.add_argument("--since", metavar="T", help="only records from T on: a duration back (2h, 7d) or an ISO time")
    r.set_defaults(fn=cmd_records)

    c = fsub.add_parser("clusters", help="embed and cluster the captured requests: the tasks, and which escalate")
    c.add_argument("src", metavar="SRC")
    c.add_argument("--route", help="only this route's records")
    c.add_argument("--since", metavar="T", help="only records from T on (2h, 7d, or an ISO time)")
    c.add_argument("--to", metavar="DST", help="where clusters.json and clusters.png go (s3:// or a directory); "
                   "default SRC-flywheel/clusters")
    c.add_argument("--embedding", choices=["auto", "minilm", "tfidf"], default="auto",
                   help="auto: MiniLM where the classify extra is installed, else TF-IDF")
    c.add_argument("--min-cluster-size", type=int, metavar="N", help="smallest task (HDBSCAN); default 5%% of the "
                   "requests, at least 10")
    c.set_defaults(fn=cmd_clusters)

    d = fsub.add_parser("dataset", help="a fine-tuning set from accepted answers: deduplicated, split, with a manifest")
    d.add_argument("src", metavar="SRC")
    d.add_argument("--route", help="only this route's records")
    d.add_argument("--cluster", metavar="C", help="only the requests of cluster C of --clusters")
    d.add_argument("--clusters", metavar="URI", help="the clusters.json `flywheel clusters` wrote")
    d.add_argument("--to", required=True, metavar="DST", help="where train.jsonl, eval.jsonl and manifest.json go")
    d.add_argument("--answers", choices=["last-tier", "accepted"], default="last-tier",
                   help="last-tier: the teacher's answers only (default); accepted: every answer the route returned "
                   "that passed its tier's checks (keeps what the first tier does right)")
    d.add_argument("--eval-share", type=float, default=0.2, metavar="F", help="share held out for evaluate "
                   "(default 0.2)")
    d.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    d.add_argument("--near", type=float, default=0.95, metavar="S", help="similarity at which two requests are near "
                   "duplicates (0..1; above 1 turns it off; default 0.95)")
    d.add_argument("--min-examples", type=int, default=10, metavar="N", help="fewest examples to split (default 10)")
    d.set_defaults(fn=cmd_dataset)

    t = fsub.add_parser("train", help="LoRA fine-tuning (peft) of a new adapter version; pushed with its lineage")
    t.add_argument("dataset", metavar="DATASET", help="what `flywheel dataset --to` wrote")
    t.add_argument("--base", required=True, metavar="B", help="the base model: its name in --fleet, or its "
                   "s3:// source")
    t.add_argument("--fleet", metavar="FILE", help="the fleet file naming --base")
    t.add_argument("--adapter", required=True, metavar="A")
    t.add_argument("--version", required=True, metavar="V")
    t.add_argument("--to", required=True, metavar="S3", help="adapter store root; the version goes to S3/A/V")
    t.add_argument("--start-from", metavar="A@V", help="go on training this adapter version (ADAPTER@VERSION of "
                   "--fleet, or its s3:// source), keeping what it already does, instead of a fresh adapter; its "
                   "rank and modules are kept (--rank and --alpha do not apply)")
    t.add_argument("--rank", type=int, default=8)
    t.add_argument("--alpha", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-4, help="learning rate (default 2e-4; the demo's tiny base: 5e-3)")
    t.add_argument("--epochs", type=float, default=3.0)
    t.add_argument("--steps", type=int, help="optimizer steps (overrides --epochs)")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--max-length", type=int, default=512, help="tokens of one example")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--render", choices=["rayjob"], help="print a KubeRay RayJob that runs this training with Ray "
                   "Train on a cluster, instead of training here")
    t.add_argument("--namespace", default="default", help="the RayJob's namespace")
    t.add_argument("--job-name", help="the RayJob's name (default train-A-V)")
    t.add_argument("--gpus", type=int, default=1, help="GPUs of the training worker (--render rayjob, --ray-train; "
                   "default 1)")
    t.add_argument("--ray-train", action="store_true", help="run the training in one Ray Train worker of the Ray "
                   "cluster this runs in (what the RayJob does; needs ray[train])")
    t.set_defaults(fn=cmd_train)

    e = fsub.add_parser("evaluate", help="candidate vs first tier vs teacher on the eval split: checks and agreement")
    e.add_argument("dataset", metavar="DATASET")
    e.add_argument("--candidate", required=True, metavar="A@V")
    e.add_argument("--fleet", required=True, metavar="FILE", help="the fleet serving the route")
    e.add_argument("--route", help="the cascade route (default: the dataset's)")
    e.add_argument("--candidate-source", metavar="S3", help="where the candidate was pushed (default: beside the "
                   "adapter's declared versions)")
    e.add_argument("--threshold", type=float, help="share of the eval split passing the checks the candidate needs "
                   "(default 0.9)")
    e.add_argument("--clusters", metavar="URI", help="the clusters.json `flywheel clusters` wrote: also judge the "
                   "candidate task by task, and fail it where it does worse than the first tier")
    e.add_argument("--max-task-drop", type=float, metavar="F", help="how much lower than the first tier's the "
                   "candidate's share on one task may be (with --clusters; default 0)")
    e.add_argument("--max-tokens", type=int, default=64, help="tokens each answer may take (default 64)")
    e.add_argument("--to", metavar="DST", help="where the JSON goes (default DATASET/evaluation-A-V.json)")
    e.set_defaults(fn=cmd_evaluate)

    o = fsub.add_parser("propose", help="add the candidate version and a canary of it to a fleet file or a ModelFleet")
    o.add_argument("fleet", metavar="FLEET", nargs="?", help="the fleet file (a ModelFleet manifest or a bare spec)")
    o.add_argument("--modelfleet", metavar="NAME", help="a ModelFleet on Kubernetes instead (the current kube "
                   "context); the operator starts the canary")
    o.add_argument("--namespace", help="the ModelFleet's namespace (default: the context's)")
    o.add_argument("--candidate", required=True, metavar="A@V")
    o.add_argument("--evaluation", required=True, metavar="URI", help="what `flywheel evaluate` wrote")
    o.add_argument("--route", help="the cascade route (default: the evaluation's)")
    o.add_argument("--threshold", type=float, help="refuse under this share passing the checks (default 0.9)")
    o.add_argument("--interval", metavar="D", type=_duration, help="the canary's time per step (default 60s)")
    o.add_argument("--steps", type=int, nargs="+", metavar="W", help="the canary's weights, e.g. 25 50 100")
    o.add_argument("--probe-max-tokens", type=int, default=64, metavar="N", help="tokens each probe may take "
                   "(default 64: a tool call is long)")
    shadow = {name: field.default for name, field in CanaryShadow.model_fields.items()}
    o.add_argument("--shadow", metavar="D", type=_duration, help="how long the canary first shadows live requests, "
                   f"unseen, before its first step (default {shadow['duration']})")
    o.add_argument("--shadow-share", type=int, metavar="PCT", help="percent of live requests copied to it "
                   f"(default {shadow['share']})")
    o.add_argument("--shadow-min-requests", type=int, metavar="N", help="shadowed requests the phase needs "
                   f"(default {shadow['min_requests']})")
    o.add_argument("--shadow-min-agreement", type=float, metavar="F", help="share of its answers that must pass "
                   f"the checks and agree with what was returned (default {shadow['min_agreement']:g})")
    o.add_argument("--no-shadow", action="store_true", help="start at the first step, without a shadow phase")
    o.set_defaults(fn=cmd_propose)

    p = fsub.add_parser("prune", help="delete records older than the retention (or print an S3 lifecycle rule)")
    p.add_argument("src", metavar="SRC", nargs="?", help="default: the --fleet file's capture.destination")
    p.add_argument("--older-than", type=_duration, metavar="D", help="e.g. 30d; default: the --fleet file's "
                   "capture.retention")
    p.add_argument("--fleet", metavar="FILE", help="a fleet file whose capture section names SRC and the retention")
    p.add_argument("--lifecycle", action="store_true", help="print the S3 lifecycle configuration that expires them "
                   "instead (aws s3api put-bucket-lifecycle-configuration)")
    p.set_defaults(fn=cmd_prune)

    f = fsub.add_parser("forget", help="delete every record of one caller (a user, or an API key)")
    f.add_argument("src", metavar="SRC")
    f.add_argument("--caller", required=True, metavar="ID", help="the request's user field, or the caller's API key")
    f.add_argument("--secret-env", default=SECRET_ENV, metavar="NAME",
                   help=f"variable holding the capture secret the router keys callerIds with (default {SECRET_ENV})")
    f.set_defaults(fn=cmd_forget)

