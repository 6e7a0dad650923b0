"""The fault-injecting proxy does what each mode promises (other areas' fault campaigns rely on it)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from exchange_sim.tcp_proxy import TcpProxy

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"


def _moto_port(moto_endpoint: str) -> int:
    return int(moto_endpoint.rsplit(":", 1)[1])


def _connect(proxy: TcpProxy, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def _read_response_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _read_whole_response(sock: socket.socket) -> bytes:
    """Head and body (by its Content-Length): nothing of this response is left to arrive later."""
    data = _read_response_head(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return data


@pytest.fixture
def proxy(moto_endpoint: str, tcp_proxy_factory: Callable[[str, int], TcpProxy]) -> TcpProxy:
    return tcp_proxy_factory("127.0.0.1", _moto_port(moto_endpoint))


def test_pass_forwards(proxy: TcpProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(REQUEST)
        assert _read_response_head(sock).startswith(b"HTTP/1.1 200")
    assert proxy.stats["forwarded"] == 1


def test_refuse_cuts_open_connections_and_refuses_new_then_recovers(proxy: TcpProxy) -> None:
    sock = _connect(proxy)
    sock.sendall(REQUEST)
    assert _read_response_head(sock).startswith(b"HTTP/1.1 200")
    proxy.set_mode("refuse")
    try:
        sock.sendall(REQUEST)
        assert sock.recv(65536) == b""
    except ConnectionError:
        pass  # reset: also a cut connection
    finally:
        sock.close()
    with pytest.raises(ConnectionRefusedError):
        _connect(proxy)
    proxy.set_mode("pass")  # re-listens on the same port
    with _connect(proxy) as again:
        again.sendall(REQUEST)
        assert _read_response_head(again).startswith(b"HTTP/1.1 200")


def test_blackhole_accepts_but_never_answers(proxy: TcpProxy) -> None:
    open_before = _connect(proxy)
    open_before.sendall(REQUEST)
    # the whole response: a body still in flight when the mode changes would be read below as an answer
    assert _read_whole_response(open_before).startswith(b"HTTP/1.1 200")
    proxy.set_mode("blackhole")
    with _connect(proxy, timeout=0.3) as sock:
        sock.sendall(REQUEST)
        with pytest.raises(TimeoutError):
            sock.recv(1)
    assert proxy.wait_for("blackholed", 1, timeout=5)
    open_before.settimeout(0.3)
    open_before.sendall(REQUEST)  # the open connection is partitioned too
    with pytest.raises(TimeoutError):
        open_before.recv(1)
    proxy.set_mode("pass")  # black-holed streams are corrupt: they are reset, new ones work
    try:
        open_before.settimeout(5)
        assert open_before.recv(1) == b""
    except ConnectionError:
        pass
    finally:
        open_before.close()
    with _connect(proxy) as sock:
        sock.sendall(REQUEST)
        assert _read_response_head(sock).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    ("status", "head", "code"),
    [(503, b"HTTP/1.1 503 Slow Down", b"SlowDown"), (500, b"HTTP/1.1 500", b"InternalError")],
)
def test_http_error_answers_each_request(proxy: TcpProxy, status: int, head: bytes, code: bytes) -> None:
    proxy.set_mode("http_error", status=status)
    for n in (1, 2):
        with _connect(proxy) as sock:
            sock.sendall(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(head)
        assert code in data
        assert proxy.stats["http_errors"] == n
    assert proxy.stats["forwarded"] == 0


def test_reset_mode_resets_new_connections(proxy: TcpProxy) -> None:
    proxy.set_mode("reset")
    try:  # the reset may arrive while connecting already, or on the first read
        with _connect(proxy) as sock:
            sock.sendall(REQUEST)
            assert sock.recv(65536) == b""
    except ConnectionError:
        pass
    assert proxy.wait_for("reset", 1, timeout=5)


def test_unknown_mode_rejected_and_stop_is_idempotent(moto_endpoint: str) -> None:
    proxy = TcpProxy("127.0.0.1", _moto_port(moto_endpoint)).start()
    with pytest.raises(ValueError, match="unknown proxy mode"):
        proxy.set_mode("slow")
    port = proxy.port
    proxy.stop()
    proxy.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
