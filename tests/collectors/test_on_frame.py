"""The collector's frame handling without a network: every kind of frame ends up somewhere, never lost."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import orjson

from collectors.collector import Collector, Connection
from collectors.config import parse_config
from depth_store import open_store


def make(tmp_path: Path, market: str = "spot") -> tuple[Collector, Connection]:
    cfg = parse_config(
        [
            "--collector-id",
            "t-1",
            "--symbols",
            "BTCUSDT,ETHUSDT",
            "--store",
            str(tmp_path / "store"),
            "--spool-dir",
            str(tmp_path / "spool"),
            "--market",
            market,
            "--book-ticker",
        ],
        env={},
    )
    c = Collector(cfg, lambda: open_store(str(tmp_path / "store")))
    conn = Connection(1, 0, "ws://x", c._stream_map(c.groups[0]))
    conn.primary = True
    c.groups[0].current = conn
    return c, conn


def lines(c: Collector) -> list[tuple[str, str, bytes]]:
    out = []
    # a spool entry is one line or the lines of one socket read
    for raw in (ln + b"\n" for entry in c.spool.pending for ln in entry.split(b"\n")[:-1]):
        if c.layout == 2:  # "<ns> <kind> <SYMBOL or -> <text>"
            _ns, kind, sym, text = raw.rstrip(b"\n").split(b" ", 3)
        else:  # "<SYMBOL> <ns> <kind> <text>"
            sym, _ns, kind, text = raw.rstrip(b"\n").split(b" ", 3)
        out.append((sym.decode(), kind.decode(), text))
    return out


def depth(sym: str, first: int, last: int, pu: int | None = None) -> bytes:
    data: dict[str, object] = {"e": "depthUpdate", "E": 1, "s": sym.upper(), "U": first, "u": last}
    if pu is not None:
        data["pu"] = pu
    data.update(b=[["1.0", "2"]], a=[])
    return orjson.dumps({"stream": f"{sym.lower()}@depth@100ms", "data": data})


def test_frames_of_every_kind(tmp_path: Path) -> None:
    async def go() -> None:
        c, conn = make(tmp_path)
        c.on_frame(conn, depth("BTCUSDT", 1, 5))
        c.on_frame(conn, depth("BTCUSDT", 6, 9))
        c.on_frame(conn, depth("BTCUSDT", 12, 14))  # gap 10..11
        other_order = (
            b'{"data":{"u":20,"U":15,"E":3,"e":"depthUpdate","s":"BTCUSDT","b":[],"a":[]},'
            b'"stream":"btcusdt@depth@100ms"}'
        )
        c.on_frame(conn, other_order)
        c.on_frame(
            conn,
            b'{"stream":"ethusdt@bookTicker","data":{"u":7,"s":"ETHUSDT","b":"1","B":"2","a":"3","A":"4"}}',
        )
        c.on_frame(conn, b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":')  # truncated
        c.on_frame(conn, b"\xff\xfe not utf-8")
        c.on_frame(
            conn,
            b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"U":21,"u":22,\n"b":[],"a":[]}}',
        )
        c.on_frame(conn, b'{"result":null,"id":1}')
        c.on_frame(conn, b'{"e":"serverShutdown","E":5}')
        got = lines(c)
        btc = c.symbols["BTCUSDT"]
        assert btc.continuity.gaps == 1 and btc.continuity.missing_ids == 2
        assert btc.continuity.last_id == 22  # the frame with a raw LF still counted for continuity
        kinds = [(s, k) for s, k, _ in got]
        assert kinds.count(("BTCUSDT", "D")) == 4  # 3 + the other field order
        assert ("ETHUSDT", "B") in kinds
        notes = [(s, orjson.loads(t)) for s, k, t in got if k == "M"]
        events = [n["event"] for _, n in notes]
        assert events.count("gap") == 1 and events.count("malformed_frame") == 3
        assert "ws_message" in events and "server_shutdown" in events
        malformed = [n for _, n in notes if n["event"] == "malformed_frame"]
        assert any(base64.b64decode(n.get("text_b64", "")) == b"\xff\xfe not utf-8" for n in malformed)
        assert any(n.get("text", "").endswith('"E":') for n in malformed)
        assert any("\n" in n.get("text", "") for n in malformed)  # JSON-escaped in the note, exact
        assert c.groups[0].replace_requested.is_set()  # serverShutdown -> make-before-break
        assert "gap" in c.snapshots.pending["BTCUSDT"]

    asyncio.run(go())


def test_usdm_chains_on_pu(tmp_path: Path) -> None:
    async def go() -> None:
        c, conn = make(tmp_path, "usdm")
        c.on_frame(conn, depth("ETHUSDT", 100, 110, pu=90))
        c.on_frame(conn, depth("ETHUSDT", 115, 120, pu=110))  # U jumps, pu chains: fine
        c.on_frame(conn, depth("ETHUSDT", 131, 140, pu=125))  # pu != 120: gap
        eth = c.symbols["ETHUSDT"].continuity
        assert (eth.gaps, eth.last_id) == (1, 140)
        c.on_frame(conn, depth("ETHUSDT", 131, 140))  # usdm frame without pu: stored, not guessed
        assert c.symbols["ETHUSDT"].malformed == 1
        assert sum(1 for _, k, _ in lines(c) if k == "D") == 4

    asyncio.run(go())


def test_streams_are_split_so_every_url_stays_under_8_kb_and_1024_streams(tmp_path: Path) -> None:
    from collectors.collector import MAX_URL_BYTES

    symbols = ",".join(f"SYM{i:04d}LONGNAMEUSDT" for i in range(1000))
    for extra, per_symbol in (([], 1), (["--book-ticker"], 2)):
        cfg = parse_config(
            [
                "--collector-id",
                "t-1",
                "--symbols",
                symbols,
                "--store",
                str(tmp_path / "store"),
                "--spool-dir",
                str(tmp_path / "spool"),
                "--ws-url",
                "wss://stream.binance.com:9443",
                *extra,
            ],
            env={},
        )
        c = Collector(cfg, lambda: open_store(str(tmp_path / "store")))
        assert sum(len(g.symbols) for g in c.groups) == 1000
        assert len(c.groups) > 1
        for g in c.groups:
            url = g.url
            assert len(f"GET {url} HTTP/1.1") < 8192 and len(url) <= MAX_URL_BYTES
            assert g.url_bytes == len(url)
            assert len(url.split("streams=")[1].split("/")) == len(g.symbols) * per_symbol <= 1024
    few = parse_config(
        ["--collector-id", "t-1", "--symbols", "BTCUSDT,ETHUSDT", "--store", str(tmp_path / "s")], env={}
    )
    c = Collector(few, lambda: open_store(str(tmp_path / "s")))
    assert [g.url for g in c.groups] == [
        "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms"
    ]


def test_the_frames_of_one_read_share_its_receive_time_and_keep_their_order_with_notes(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        c, conn = make(tmp_path)
        c.on_frames(
            conn,
            [
                depth("BTCUSDT", 1, 5),
                depth("ETHUSDT", 1, 2),
                depth("BTCUSDT", 6, 9),
                depth("BTCUSDT", 12, 14),  # gap 10..11: its note comes before this frame's line
                b'{"result":null,"id":1}',  # a control answer: noted in place
                depth("BTCUSDT", 15, 16),
            ],
        )
        # an entry per run of common frames, split where a note goes between them: 3 runs + 2 notes
        assert len(c.spool.pending) == 5
        got = lines(c)
        assert [(s, k) for s, k, _ in got] == [
            ("BTCUSDT", "D"),
            ("ETHUSDT", "D"),
            ("BTCUSDT", "D"),
            ("BTCUSDT", "M"),
            ("BTCUSDT", "D"),
            ("-", "M"),
            ("BTCUSDT", "D"),
        ]
        times = {
            ln.split(b" ", 1)[0]
            for entry in c.spool.pending
            for ln in entry.split(b"\n")[:-1]
            if b" D " in ln
        }
        assert len(times) == 1  # one recv(), one receive time
        assert conn.frames == 6 and c.symbols["BTCUSDT"].messages == 4
        # over the disk budget, every depth line of the read is counted for its symbol
        c.spool.pending.clear()
        c.spool.accepting = False
        c.on_frames(conn, [depth("BTCUSDT", 17, 18), depth("ETHUSDT", 3, 4), depth("BTCUSDT", 19, 20)])
        assert not c.spool.pending
        assert c.symbols["BTCUSDT"].dropped_lines == 2 and c.symbols["ETHUSDT"].dropped_lines == 1
        assert c.spool.dropped_lines == 3

    asyncio.run(go())
