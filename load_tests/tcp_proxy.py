"""A TCP proxy in front of the local S3, to take S3 away without emptying it (moto keeps its data in memory).

Modes: ``forward`` (the default), ``drop`` (connections are refused: open ones are closed and new ones closed
as soon as they are accepted) and ``blackhole`` (connections are accepted, and nothing is ever answered or
forwarded, on new connections and open ones alike). Threads and sockets only.
"""

from __future__ import annotations

import socket
import threading


class TCPProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1"):
        self.target = (host, target_port)
        self.mode = "forward"
        self._server = socket.create_server((host, 0))
        self.port = self._server.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        threading.Thread(target=self._accept, daemon=True, name="tcp-proxy").start()

    def set_mode(self, mode: str) -> None:
        assert mode in ("forward", "drop", "blackhole"), mode
        with self._lock:
            self.mode = mode
            if mode == "drop":
                for sock in list(self._open):
                    _close(sock)
                self._open.clear()
            self._changed.notify_all()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                mode = self.mode
            if mode == "drop":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST, not FIN
                _close(client)
                continue
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        with self._lock:
            while self.mode == "blackhole":  # accepted, then silence until S3 is back (or the proxy drops it)
                self._changed.wait()
            if self.mode == "drop":
                _close(client)
                return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _close(client)
            return
        upstream.settimeout(None)
        with self._lock:
            self._open |= {client, upstream}
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                with self._lock:
                    while self.mode == "blackhole":  # open connections go silent too
                        self._changed.wait()
                    if self.mode == "drop":
                        break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            _close(source)
            _close(sink)

    def close(self) -> None:
        self.set_mode("drop")
        _close(self._server)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
