"""``depth-exchange-sim``: run the simulator as a process (prints ``listening ws://HOST:PORT`` when ready)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from exchange_sim.server import ExchangeSimulator, SimConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="depth-exchange-sim",
        description="Local Binance-compatible market-data server "
        "(websocket streams, REST depth and a /_sim control API on one port).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9443, help="0 picks a free port")
    p.add_argument("--market", choices=["spot", "usdm"], default="spot")
    p.add_argument("--symbols", default="BTCUSDT", help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--event-interval-ms", type=int, default=100)
    p.add_argument("--speed", type=float, default=1.0, help="time compression (exchange time / wall time)")
    p.add_argument(
        "--replay", metavar="FILE", help="replay a recording (hftbacktest .gz or cryptofeed .ws file)"
    )
    p.add_argument(
        "--replay-snapshot", metavar="FILE", help="cryptofeed .http file (default: found beside --replay)"
    )
    p.add_argument("--replay-start", choices=["on_subscribe", "immediate", "paused"], default="on_subscribe")
    p.add_argument("--firehose-rate", type=int, help="messages/s per symbol from a pre-encoded pool")
    p.add_argument("--firehose-pool", type=int, default=2048, help="generated events in the firehose cycle")
    p.add_argument("--max-connection-age", type=float, default=86400.0, metavar="S")
    p.add_argument("--shutdown-notice", type=float, metavar="S", help="send serverShutdown S seconds before")
    p.add_argument("--ping-interval", type=float, default=20.0, metavar="S")
    p.add_argument("--pong-timeout", type=float, default=60.0, metavar="S")
    p.add_argument("--weight-limit", type=int, default=6000, help="REST request weight per minute")
    p.add_argument("--max-incoming-per-s", type=int, default=5)
    p.add_argument("--paused", action="store_true", help="start with event generation paused")
    p.add_argument("--truth-max-events", type=int, default=50_000, help="canonical events kept per symbol")
    p.add_argument("--log-level", default="WARNING")
    return p


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        market=args.market,
        symbols=[s.strip().upper() for s in args.symbols.split(",") if s.strip()],
        seed=args.seed,
        event_interval_ms=args.event_interval_ms,
        speed=args.speed,
        max_connection_age_s=args.max_connection_age,
        shutdown_notice_s=args.shutdown_notice,
        ping_interval_s=args.ping_interval,
        pong_timeout_s=args.pong_timeout,
        weight_limit_per_minute=args.weight_limit,
        max_incoming_per_s=args.max_incoming_per_s,
        replay_path=args.replay,
        replay_snapshot_path=args.replay_snapshot,
        replay_start=args.replay_start,
        firehose_rate=args.firehose_rate,
        firehose_pool=args.firehose_pool,
        start_paused=args.paused,
        truth_max_events=args.truth_max_events,
    )


async def run(config: SimConfig, host: str, port: int) -> None:
    sim = ExchangeSimulator(config)
    await sim.start(host, port)
    print(f"listening {sim.ws_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"depth-exchange-sim: {exc}", file=sys.stderr)
        return 2
    asyncio.run(run(config, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
