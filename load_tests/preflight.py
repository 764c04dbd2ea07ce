"""Checks before `make load`: the host is this machine (unless allowed) and a fleet answers there.

    python -m load_tests.preflight URL [--allow-remote]

Exit 0 when the load may start, 2 with the reason on stderr when not.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

from load_tests.workload import is_loopback


def problem(url: str, *, allow_remote: bool) -> str | None:
    """Why ``url`` must not be loaded now; None when it may."""
    if not url.startswith(("http://", "https://")):
        return f"LOAD_HOST={url!r} is not an http(s) URL, e.g. http://127.0.0.1:8000"
    if not allow_remote and not is_loopback(url):
        return (f"LOAD_HOST={url} is not this machine. Load tests target loopback only (127.0.0.1, localhost, "
                "[::1]); set LOAD_ALLOW_REMOTE=1 to load a fleet elsewhere that you are allowed to load")
    health = f"{url.rstrip('/')}/healthz"
    try:
        with urllib.request.urlopen(health, timeout=5) as resp:
            resp.read()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return (f"no fleet answers at {health} ({reason}). Start one first: `make demo` "
                "(or `slm-fleet serve FILE`), or point LOAD_HOST at it")
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m load_tests.preflight", description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("--allow-remote", action="store_true")
    args = p.parse_args(argv)
    found = problem(args.url, allow_remote=args.allow_remote)
    if found:
        print(f"error: {found}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
