"""``slm-fleet flywheel``: from captured traffic to a new specialist, one S3-reading step per command."""

from __future__ import annotations

import argparse
import json
import os
import sys

from serving.api.capture import SECRET_ENV
from serving.api.fields import DURATION_PATTERN, duration_seconds
from serving.api.problems import UserError

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


def add_parser(sub) -> None:
    fw = sub.add_parser("flywheel", help="captured traffic -> clusters -> dataset -> specialist -> canary",
                        description=FLYWHEEL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    fsub = fw.add_subparsers(dest="flywheel_command", required=True)

    r = fsub.add_parser("records", help="print captured records as JSON lines (a summary on stderr)")
    r.add_argument("src", metavar="SRC")
    r.add_argument("--route", help="only this route's records")
    r.add_argument("--since", metavar="T", help="only records from T on: a duration back (2h, 7d) or an ISO time")
    r.set_defaults(fn=cmd_records)

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

