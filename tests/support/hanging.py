"""A collector that hangs: a real socket on 127.0.0.1 that accepts, reads, and never answers.

One thread serves every connection with `selectors`: it accepts, reads what the client sends
and remembers it, and notices when the client closes. So a test can tell when a client has sent
a whole request and is waiting for the answer (`wait_for_request`), and whether it is still
waiting (`is_open`). It stops when the `with` block ends, or by itself after `lifetime` seconds,
closing every connection (the clients then see the connection reset or closed).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from types import TracebackType


class Conn:
    """One accepted connection: what the client sent, and whether it has closed its end."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""
        self.closed_by_client = False

    def has_request(self) -> bool:
        """A whole HTTP request (headers, then Content-Length bytes of body) has arrived."""
        head, sep, body = self.data.partition(b"\r\n\r\n")
        if not sep:
            return False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                return len(body) >= int(value.strip() or 0)
        return True


class HangingServer:
    def __init__(self, lifetime: float = 600.0) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._deadline = time.monotonic() + lifetime
        self._conns: list[Conn] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._serve, name="hanging-server", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connections(self) -> list[Conn]:
        with self._changed:
            return list(self._conns)

    def wait_for_request(self, timeout: float = 60.0) -> Conn:
        """The first connection whose client has sent a whole request and not closed since."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for conn in self._conns:
                    if conn.has_request() and not conn.closed_by_client:
                        return conn
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no complete request within {timeout}s")
                self._changed.wait(left)

    def is_open(self, conn: Conn) -> bool:
        """True while the client still holds the connection (it is waiting for the answer)."""
        with self._changed:
            if conn.closed_by_client:
                return False
        try:
            peeked = conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:  # reset by the client, or already closed by stop()
            return False
        return peeked != b""  # b"": the client closed; data: it is still talking

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(OSError):  # it stopped by itself meanwhile
                self._wake_w.send(b"x")
            self._thread.join(10)

    def __enter__(self) -> HangingServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while time.monotonic() < self._deadline:
                for key, _ in sel.select(timeout=max(0.0, self._deadline - time.monotonic())):
                    if key.fileobj is self._wake_r:
                        return
                    if key.fileobj is self._listener:
                        self._accept(sel)
                    else:
                        self._read(sel, key.data)
        finally:
            sel.close()
            with self._changed:
                for conn in self._conns:
                    conn.sock.close()
                self._changed.notify_all()
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        conn = Conn(sock)
        sel.register(sock, selectors.EVENT_READ, conn)
        with self._changed:
            self._conns.append(conn)
            self._changed.notify_all()

    def _read(self, sel: selectors.BaseSelector, conn: Conn) -> None:
        try:
            chunk = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        with self._changed:
            if chunk:
                conn.data += chunk
            else:
                conn.closed_by_client = True
            self._changed.notify_all()
        if not chunk:  # keep the socket (a closed client stays visible), stop watching it
            sel.unregister(conn.sock)
