"""A proxy that can be taken down and brought back, to cut an endpoint without losing its
state: TCP on 127.0.0.1 for S3 or SQS on moto_server, or a unix socket for the docker engine."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.helpers.moto import free_port


class FlakyProxy:
    def __init__(
        self,
        target_port: int | None = None,
        target_socket: str | None = None,
        listen_socket: str | None = None,
    ) -> None:
        self.target_port = target_port
        self.target_socket = target_socket
        self.listen_socket = listen_socket
        self.port = free_port()
        self._up = threading.Event()
        self._up.set()
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        if listen_socket:
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(listen_socket)
            self._listener.listen(64)
        else:
            self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        self.refused = 0  # connections refused while down: proof the outage was felt
        self.cut = 0  # open connections cut by down()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def endpoint(self) -> str:
        if self.listen_socket:
            return f"unix://{self.listen_socket}"
        return f"http://127.0.0.1:{self.port}"

    def _connect_upstream(self) -> socket.socket:
        if self.target_socket:
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target_socket)
            return upstream
        return socket.create_connection(("127.0.0.1", self.target_port or 0), timeout=5)

    def down(self) -> None:
        """Refuse new connections and cut the open ones, as a failed endpoint would."""
        self._up.clear()
        with self._lock:
            self.cut += len(self._connections)
            for connection in list(self._connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            self._connections.clear()

    def up(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._closed = True
        self.down()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                self.refused += 1
                client.close()
                continue
            try:
                upstream = self._connect_upstream()
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()
            with self._lock:
                self._connections.discard(source)
                self._connections.discard(sink)
