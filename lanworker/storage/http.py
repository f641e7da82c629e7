"""http(s) inputs, fetched with requests; private addresses are refused at connect time.

Invariant: unless the operator allows private addresses, every TCP connection an http(s)
input opens (the first request and every redirect) goes to a global unicast address.
The check runs on the connected socket's peer address, after DNS resolution, so neither a
hostname that resolves to 127.0.0.1 or 169.254.169.254 nor a DNS answer that changes
between a check and the connect can reach the worker's own network.
"""

from __future__ import annotations

import socket
from typing import Any, BinaryIO

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from lanworker.core.addresses import is_public_address
from lanworker.core.errors import AddressRefused

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
MAX_REDIRECTS = 5


class _PublicOnly:
    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        peer = sock.getpeername()[0]
        if not is_public_address(peer):
            sock.close()
            raise AddressRefused(
                f"{getattr(self, 'host', '?')} resolves to {peer}, a non-public address "
                "(the worker refuses them unless started with --allow-private-http)"
            )
        return sock


class _PublicHTTPConnection(_PublicOnly, HTTPConnection):
    pass


class _PublicHTTPSConnection(_PublicOnly, HTTPSConnection):
    pass


class _PublicHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PublicHTTPConnection


class _PublicHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PublicHTTPSConnection


class _PublicOnlyAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PublicHTTPPool, "https": _PublicHTTPSPool}


def make_session(allow_private: bool) -> requests.Session:
    session = requests.Session()
    session.max_redirects = MAX_REDIRECTS
    if not allow_private:
        # A proxy from the environment would be the peer instead of the real host.
        session.trust_env = False
        adapter = _PublicOnlyAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session


def open_http(session: requests.Session, url: str) -> BinaryIO:
    """A streaming reader of the body, bytes as served (never decompressed)."""
    response = session.get(url, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
    try:
        response.raise_for_status()
    except BaseException:
        response.close()
        raise
    raw: BinaryIO = response.raw  # type: ignore[assignment]  # file-like: read() and close()
    return raw
