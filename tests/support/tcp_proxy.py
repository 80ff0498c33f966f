"""A TCP proxy for tests that need a database to go away and come back.

Put it between a client and PostgreSQL (the client connects to 127.0.0.1:<proxy.port>);
``cut()`` closes every open connection and stops listening, so new connections are refused, as
when the server or the network is down; ``restore()`` listens on the same port again. Plain
sockets and threads: one thread accepts, two pump bytes for each connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._accepting = threading.Event()
        self._acceptor: threading.Thread | None = None

    def start(self) -> TcpProxy:
        self._listen()
        return self

    def cut(self) -> None:
        """Refuse new connections and drop every open one."""
        self._accepting.clear()
        if self._acceptor is not None:
            self._acceptor.join(timeout=10)
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            _close(sock)

    def restore(self) -> None:
        self._listen()

    def stop(self) -> None:
        self.cut()

    @property
    def connections(self) -> int:
        """Open sockets on both sides (two per proxied connection)."""
        with self._lock:
            return len(self._sockets)

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # The same port again after cut(): earlier connections may still be in TIME_WAIT.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        # accept() wakes up regularly, so cut() takes effect without closing a socket another
        # thread is blocked on.
        listener.settimeout(0.2)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accepting.set()
        self._acceptor = threading.Thread(target=self._accept_loop, args=(listener,), daemon=True)
        self._acceptor.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        try:
            while self._accepting.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=10)
                except OSError:
                    _close(client)
                    continue
                upstream.settimeout(None)
                client.settimeout(None)
                with self._lock:
                    self._sockets.update((client, upstream))
                for source, sink in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()
        finally:
            # Closing the listening socket is what makes new connections fail with ECONNREFUSED.
            listener.close()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass  # the other side, or cut(), closed the connection
        finally:
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
