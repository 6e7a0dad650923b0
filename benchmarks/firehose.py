"""A minimal, fast Binance-like sender: raw-socket websocket server pushing pre-encoded depth frames.

Why not the simulator: the receive benchmarks must measure the *receiver*. This sender builds each
frame from a pool of pre-encoded real-size level payloads (~40 levels, ~1.5 KB, like real BTCUSDT
``@depth@100ms``) with only ``E``/``U``/``u`` formatted per frame, writes unmasked websocket frames
straight to the socket in batches, and so costs far less CPU per message than any receiver. Ids are
contiguous per symbol (``U == previous u + 1``) so a collector sees no gaps.

It also answers the REST calls a collector or cryptofeed makes at start (``/api/v3/depth``,
``/api/v3/exchangeInfo``) with a small consistent snapshot. Run it as
``python -m benchmarks.firehose --port P --count N`` or use :class:`Firehose` in-process (a thread).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import random
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
FIRST_ID = 50_093_239_189


def make_level_payloads(count: int, levels: int = 40, seed: int = 7, mid: float = 61837.63) -> list[bytes]:
    """``"b":[...],"a":[...]`` payloads shaped like real BTCUSDT events (8-decimal strings, ~30% zeros)."""
    rng = random.Random(seed)
    out: list[bytes] = []
    for _ in range(count):
        n_bid = rng.randint(levels // 3, 2 * levels // 3)
        sides: list[str] = []
        for side, n in (("b", n_bid), ("a", levels - n_bid)):
            lv = []
            for _ in range(n):
                off = rng.expovariate(1 / 150.0)
                price = mid - 0.01 - off if side == "b" else mid + off
                qty = 0.0 if rng.random() < 0.3 else rng.lognormvariate(-3.0, 1.5)
                lv.append(f'["{price:.2f}000000","{qty:.8f}"]')
            sides.append(f'"{side}":[{",".join(lv)}]')
        out.append(",".join(sides).encode())
    return out


def ws_header(length: int) -> bytes:
    """Header of one unmasked server text frame (FIN set)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return b"\x81\x7e" + struct.pack(">H", length)
    return b"\x81\x7f" + struct.pack(">Q", length)


def snapshot_body(last_update_id: int, levels: int = 100, mid: float = 61837.63) -> bytes:
    bids = [[f"{mid - 0.01 * (i + 1):.8f}", "0.10000000"] for i in range(levels)]
    asks = [[f"{mid + 0.01 * i:.8f}", "0.10000000"] for i in range(levels)]
    return json.dumps(
        {"lastUpdateId": last_update_id, "bids": bids, "asks": asks}, separators=(",", ":")
    ).encode()


def exchange_info_body(symbols: list[str]) -> bytes:
    """Just enough of ``/api/v3/exchangeInfo`` for cryptofeed's symbol mapping."""
    syms = [
        {
            "symbol": s,
            "status": "TRADING",
            "baseAsset": s[:-4],
            "quoteAsset": s[-4:],
            "isSpotTradingAllowed": True,
            "permissions": ["SPOT"],
            "permissionSets": [["SPOT"]],
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": "0.01000000",
                    "maxPrice": "1000000.00000000",
                    "tickSize": "0.01000000",
                }
            ],
        }
        for s in symbols
    ]
    return json.dumps({"timezone": "UTC", "serverTime": int(time.time() * 1000), "symbols": syms}).encode()


def make_self_signed(folder: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1/localhost (cryptofeed accepts only ``wss://`` addresses)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


@dataclass
class SendStats:
    """What a connection sent; ``first_send``/``last_send`` are perf_counter times."""

    frames: int = 0
    bytes: int = 0
    first_send: float = 0.0
    last_send: float = 0.0
    connections: int = 0
    done: threading.Event = field(default_factory=threading.Event)


class Firehose:
    """A websocket + REST server on 127.0.0.1 that sends ``count`` frames per connection.

    ``rate`` (frames/s per symbol) of None means as fast as the receiver takes them.
    """

    def __init__(
        self,
        count: int,
        *,
        symbols: list[str] | None = None,
        rate: float | None = None,
        payloads: int = 512,
        levels: int = 40,
        port: int = 0,
        tls_dir: Path | None = None,
    ) -> None:
        self.count = count
        self.symbols = symbols or ["BTCUSDT"]
        self.rate = rate
        self.payloads = make_level_payloads(payloads, levels)
        self.sock = socket.create_server(("127.0.0.1", port), backlog=64)
        self.port: int = self.sock.getsockname()[1]
        self.stats = SendStats()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._next_id = {s: FIRST_ID for s in self.symbols}
        self._id_lock = threading.Lock()
        self.rest_calls: list[str] = []
        self.ssl_context: ssl.SSLContext | None = None
        self.cert_path: Path | None = None
        if tls_dir is not None:
            self.cert_path, key_path = make_self_signed(tls_dir)
            self.ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ssl_context.load_cert_chain(self.cert_path, key_path)

    @property
    def url(self) -> str:
        return f"{'wss' if self.ssl_context else 'ws'}://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def frame_size(self) -> int:
        """Average payload size of one text frame (envelope included)."""
        body = sum(len(p) for p in self.payloads) / len(self.payloads)
        return int(body + 130)

    def start(self) -> Firehose:
        t = threading.Thread(target=self._accept_loop, name="firehose-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> Firehose:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), name="firehose-conn", daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.ssl_context is not None:
                conn.settimeout(10)
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
                conn.settimeout(None)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            request_line, *header_lines = head.split("\r\n")
            path = request_line.split(" ")[1]
            headers = {
                k.strip().lower(): v.strip()
                for k, v in (ln.split(":", 1) for ln in header_lines if ":" in ln)
            }
            if headers.get("upgrade", "").lower() == "websocket":
                self._serve_ws(conn, path, headers)
            else:
                self._serve_rest(conn, path)
        except OSError:
            pass
        finally:
            conn.close()

    def _serve_rest(self, conn: socket.socket, path: str) -> None:
        url = urllib.parse.urlsplit(path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.rest_calls.append(path)
        if url.path.endswith("/depth"):
            sym = query.get("symbol", self.symbols[0]).upper()
            with self._id_lock:
                last = self._next_id.get(sym, FIRST_ID) - 1
            body = snapshot_body(last)
        elif url.path.endswith("/exchangeInfo"):
            body = exchange_info_body(self.symbols)
        elif url.path.endswith("/time"):
            body = json.dumps({"serverTime": int(time.time() * 1000)}).encode()
        else:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"x-mbx-used-weight-1m: 1\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )

    def _serve_ws(self, conn: socket.socket, path: str, headers: dict[str, str]) -> None:
        key = headers.get("sec-websocket-key", "").encode()
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID, usedforsecurity=False).digest())
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query))
        streams = [s for s in query.get("streams", "").split("/") if s] or [
            f"{self.symbols[0].lower()}@depth@100ms"
        ]
        drain = threading.Thread(target=self._drain, args=(conn,), daemon=True)
        drain.start()
        self.stats.connections += 1
        self._send_frames(conn, streams)
        # keep the connection open (idle) until the client closes it or we stop
        while not self._stop.is_set() and drain.is_alive():
            drain.join(timeout=0.2)

    def _drain(self, conn: socket.socket) -> None:
        """Read and drop whatever the client sends (pongs, close); ends when the client closes."""
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass

    def _send_frames(self, conn: socket.socket, streams: list[str]) -> None:
        n_pay = len(self.payloads)
        pay = self.payloads
        envelopes = []
        for st in streams:
            sym = st.split("@", 1)[0].upper()
            envelopes.append(
                (
                    sym,
                    b'{"stream":"%s","data":{"e":"depthUpdate","E":%%d,"s":"%s","U":%%d,"u":%%d,'
                    % (st.encode(), sym.encode()),
                )
            )
        batch = 1 if self.rate else 256
        interval = (1.0 / self.rate) if self.rate else 0.0
        sent = 0
        stats = self.stats
        stats.first_send = stats.first_send or time.perf_counter()
        next_tick = time.perf_counter()
        k = 0
        while sent < self.count and not self._stop.is_set():
            parts: list[bytes] = []
            e_ms = int(time.time() * 1000)
            n = min(batch, self.count - sent)
            for _ in range(n):
                for sym, env in envelopes:
                    p = pay[k % n_pay]
                    k += 1
                    with self._id_lock:
                        first = self._next_id[sym]
                        last = first + 20 + (k & 15)
                        self._next_id[sym] = last + 1
                    text = (env % (e_ms, first, last)) + p + b"}}"
                    parts.append(ws_header(len(text)))
                    parts.append(text)
            buf = b"".join(parts)
            conn.sendall(buf)
            sent += n
            stats.frames += n * len(envelopes)
            stats.bytes += len(buf)
            stats.last_send = time.perf_counter()
            if interval:
                next_tick += interval
                delay = next_tick - time.perf_counter()
                if delay > 0:
                    self._stop.wait(delay)
        stats.done.set()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--count", type=int, default=100_000, help="frames per symbol per connection")
    ap.add_argument("--symbols", default="BTCUSDT")
    ap.add_argument("--rate", type=float, default=None, help="frames/s per symbol (default: unthrottled)")
    ap.add_argument(
        "--tls-dir", type=Path, default=None, help="serve wss/https with a self-signed cert kept here"
    )
    args = ap.parse_args()
    fh = Firehose(
        args.count, symbols=args.symbols.split(","), rate=args.rate, port=args.port, tls_dir=args.tls_dir
    ).start()
    print(
        json.dumps(
            {
                "port": fh.port,
                "url": fh.url,
                "http_url": fh.http_url,
                "cert": str(fh.cert_path) if fh.cert_path else None,
            }
        ),
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fh.stop()


if __name__ == "__main__":
    main()
