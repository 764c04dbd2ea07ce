"""A local S3 endpoint (moto in server mode on loopback) for the demo and the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

from serving.local.ports import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "slmfleet", "AWS_SECRET_ACCESS_KEY": "slmfleet", "AWS_DEFAULT_REGION": "us-east-1"}


def _die_with_parent() -> None:
    """Ask Linux to stop the child when its parent dies, so a crashed demo leaves no S3 server."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@contextmanager
def local_s3(port: int | None = None, *, buckets: tuple[str, ...] = ()):
    """Run moto_server on 127.0.0.1 and point this process's AWS environment at it.

    The environment is set before Ray starts so that Ray's workers inherit it. Yields the URL.
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
    )
    saved = {k: os.environ.get(k) for k in (*CREDENTIALS, "AWS_ENDPOINT_URL")}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on port {port}") from None
                time.sleep(0.2)
        os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=url)
        if buckets:
            import boto3

            s3 = boto3.client("s3")
            for bucket in buckets:
                s3.create_bucket(Bucket=bucket)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
