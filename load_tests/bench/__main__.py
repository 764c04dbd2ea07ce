"""``python -m load_tests.bench [NAME ...]``: run the benchmarks against the local tiny fleet.

Each benchmark prints its figures and writes them to ``.bench/<name>.json`` (``--out``), under
``figures``, named by the rule in docs/benchmarks.md ("Naming"). The control-path benchmark needs
no servers; the others share one fleet started here.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from load_tests.bench import benchmarks

ALL = ["control_path", *benchmarks.STACK_BENCHMARKS]


def machine() -> dict:
    import os

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "system": platform.platform(), "engine": "vLLM on CPU, tiny generated Llama (float32)"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m load_tests.bench", description=__doc__)
    p.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all of {', '.join(ALL)})")
    p.add_argument("--out", default=".bench", help="folder for the JSON results")
    args = p.parse_args(argv)
    unknown = set(args.names) - set(ALL)
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}")
    names = args.names or ALL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def record(name: str, figures: dict) -> None:
        result = {"benchmark": name, "machine": machine(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "figures": figures}
        (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"\n== {name}\n{json.dumps(figures, indent=2)}", flush=True)

    if "control_path" in names:
        record("control_path", benchmarks.control_path())
    stack_names = [n for n in names if n in benchmarks.STACK_BENCHMARKS]
    if stack_names:
        from load_tests.bench.stack import running_stack

        with running_stack() as stack:
            for name in stack_names:
                record(name, benchmarks.STACK_BENCHMARKS[name](stack))
    print(f"\nresults in {out}/", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
