"""Flags, environment variables and the refusals that end in exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.cli import main
from collectors.config import ConfigError, parse_config

BASE = ["--collector-id", "eu-1", "--symbols", "btcusdt,ETHUSDT", "--store", "/tmp/store"]


def test_flags_and_defaults() -> None:
    cfg = parse_config(BASE, env={"HOME": "/home/x"})
    assert cfg.collector_id == "eu-1"
    assert cfg.symbols == ("BTCUSDT", "ETHUSDT")
    assert cfg.market == "spot"
    assert cfg.ws_url == "wss://stream.binance.com:9443"
    assert cfg.rest_url == "https://api.binance.com"
    assert cfg.snapshot_depth == 1000
    assert cfg.flush_seconds == 10
    assert cfg.shutdown_grace == 120
    assert cfg.max_streams_per_connection == 1024
    assert cfg.max_connection_age == 84600
    assert cfg.metrics_port is None and cfg.metrics_host == "127.0.0.1"
    assert cfg.spool_dir == Path("/home/x/.local/state/depth-collector/eu-1")
    assert cfg.depth_stream_suffix == "@depth@100ms"


def test_usdm_defaults() -> None:
    cfg = parse_config([*BASE, "--market", "usdm", "--speed", "1000ms"], env={})
    assert cfg.ws_url == "wss://fstream.binance.com/public"
    assert cfg.rest_url == "https://fapi.binance.com"
    assert cfg.snapshot_depth == 1000
    assert cfg.depth_stream_suffix == "@depth"


def test_environment_is_read_and_the_flag_wins() -> None:
    env = {
        "DEPTH_COLLECTOR_ID": "ap-1",
        "DEPTH_SYMBOLS": "SOLUSDT",
        "DEPTH_STORE_URL": "s3://bucket/prefix",
        "DEPTH_MARKET": "usdm",
        "DEPTH_FLUSH_SECONDS": "2.5",
        "DEPTH_SPOOL_MAX_BYTES": "512M",
        "DEPTH_SPOOL_MAX_PENDING_BYTES": "16M",
        "DEPTH_BOOK_TICKER": "true",
        "DEPTH_WS_URL": "ws://127.0.0.1:1/x/",
        "XDG_STATE_HOME": "/state",
    }
    cfg = parse_config([], env=env)
    assert (cfg.collector_id, cfg.symbols, cfg.store, cfg.market) == (
        "ap-1",
        ("SOLUSDT",),
        "s3://bucket/prefix",
        "usdm",
    )
    assert cfg.flush_seconds == 2.5
    assert cfg.spool_max_bytes == 512 * 1024**2
    assert cfg.spool_max_pending_bytes == 16 * 1024**2
    assert cfg.book_ticker is True
    assert cfg.ws_url == "ws://127.0.0.1:1/x"  # path kept, trailing slash dropped
    assert cfg.spool_dir == Path("/state/depth-collector/ap-1")
    cfg2 = parse_config(["--collector-id", "eu-2", "--flush-seconds", "3", "--market", "spot"], env=env)
    assert (cfg2.collector_id, cfg2.flush_seconds, cfg2.market) == ("eu-2", 3.0, "spot")
    assert parse_config(["--spool-max-pending-bytes", "2M"], env=env).spool_max_pending_bytes == 2 * 1024**2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--collector-id", "EU-1"], "--collector-id"),
        (["--collector-id", "eu/1"], "--collector-id"),
        (["--symbols", "BTC-USDT"], "--symbols"),
        (["--symbols", "../x"], "--symbols"),
        (["--symbols", ","], "--symbols"),
        (["--market", "coinm"], "--market"),
        (["--speed", "250ms"], "--speed"),
        (["--flush-seconds", "abc"], "--flush-seconds"),
        (["--flush-seconds", "0"], "--flush-seconds"),
        (["--snapshot-depth", "6000"], "--snapshot-depth"),
        (["--market", "usdm", "--snapshot-depth", "7"], "--snapshot-depth"),
        (["--metrics-port", "70000"], "--metrics-port"),
        (["--spool-max-bytes", "lots"], "--spool-max-bytes"),
        (["--ws-url", "http://x"], "--ws-url"),
        (["--rest-url", "ftp://x"], "--rest-url"),
        (["--max-streams-per-connection", "2000"], "--max-streams-per-connection"),
        (["--no-such-flag"], "unrecognized"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config([*BASE, *args], env={})


def test_required_flags() -> None:
    with pytest.raises(ConfigError, match="--collector-id"):
        parse_config(["--symbols", "BTCUSDT", "--store", "/x"], env={})
    with pytest.raises(ConfigError, match="--symbols"):
        parse_config(["--collector-id", "a", "--store", "/x"], env={})
    with pytest.raises(ConfigError, match="--store"):
        parse_config(["--collector-id", "a", "--symbols", "BTCUSDT"], env={})


def test_main_exits_2_with_a_message(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--collector-id", "Bad Id", "--symbols", "BTCUSDT", "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--collector-id" in err and "invalid collector id" in err
    assert (
        main(
            [
                "--collector-id",
                "a",
                "--symbols",
                "BTCUSDT",
                "--store",
                "gs://bucket/x",
                "--spool-dir",
                str(tmp_path / "s"),
            ]
        )
        == 2
    )
    assert "--store" in capsys.readouterr().err


def test_log_formats(capsys: pytest.CaptureFixture[str]) -> None:
    import orjson

    from collectors import logs

    logs.setup("json", "INFO")
    logs.warning("gap", symbol="BTCUSDT", from_id=5, to_id=7)
    doc = orjson.loads(capsys.readouterr().err.strip())
    assert (doc["event"], doc["level"], doc["symbol"], doc["from_id"]) == ("gap", "warning", "BTCUSDT", 5)
    logs.setup("kv", "INFO")
    logs.info("upload_failed", key="raw/x", error="timed out (5 s)")
    line = capsys.readouterr().err.strip()
    assert "event=upload_failed" in line and "key=raw/x" in line and 'error="timed out (5 s)"' in line
    logs.setup("json", "WARNING")
    logs.info("quiet")
    assert capsys.readouterr().err == ""


def test_raw_layout_flag_and_env() -> None:
    assert parse_config([*BASE, "--raw-layout", "v2"], env={}).raw_layout == 2
    assert parse_config([*BASE], env={"DEPTH_RAW_LAYOUT": "v1"}).raw_layout == 1
    assert parse_config([*BASE, "--raw-layout", "V2"], env={"DEPTH_RAW_LAYOUT": "v1"}).raw_layout == 2
    with pytest.raises(ConfigError, match="--raw-layout"):
        parse_config([*BASE, "--raw-layout", "v3"], env={})


def test_symbols_from_exchange() -> None:
    base = ["--collector-id", "eu-1", "--store", "/tmp/store"]
    cfg = parse_config(
        [*base, "--symbols-from", "exchange"], env={"DEPTH_SYMBOLS": "BTCUSDT"}
    )  # the flag wins
    assert (cfg.symbols_from, cfg.symbols, cfg.quote_asset, cfg.symbols_refresh) == (
        "exchange",
        (),
        "USDT",
        300.0,
    )
    cfg = parse_config([*base, "--symbols", "btcusdt"], env={"DEPTH_SYMBOLS_FROM": "exchange"})
    assert (cfg.symbols_from, cfg.symbols) == (None, ("BTCUSDT",))
    cfg = parse_config(base, env={"DEPTH_SYMBOLS_FROM": "exchange", "DEPTH_QUOTE_ASSET": "fdusd"})
    assert (cfg.symbols_from, cfg.quote_asset) == ("exchange", "FDUSD")
    with pytest.raises(ConfigError, match="not both"):
        parse_config([*base, "--symbols", "BTCUSDT", "--symbols-from", "exchange"], env={})
    with pytest.raises(ConfigError, match="--symbols-from"):
        parse_config([*base, "--symbols-from", "file"], env={})
    with pytest.raises(ConfigError, match="--symbols"):
        parse_config(base, env={})
    with pytest.raises(ConfigError, match="--quote-asset"):
        parse_config([*base, "--symbols-from", "exchange", "--quote-asset", "US/DT"], env={})
