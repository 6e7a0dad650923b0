"""``depth-collector``: parse flags, take the spool lock, run until SIGTERM/SIGINT.

Exit status: 0 after a clean stop (even when the store stayed unreachable: what was not uploaded stays
in the spool and is reported), 2 for bad flags, an unknown symbol or a spool dir in use, 1 for an
unexpected failure.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence

from collectors import logs
from collectors.collector import Collector
from collectors.config import CollectorConfig, ConfigError, parse_config
from collectors.memory import keep_freed_memory
from collectors.metrics import MetricsServer
from collectors.spool import SpoolLock, SpoolLockedError
from depth_store import ObjectStore, StoreError, StoreUnavailableError, open_store

EXIT_USAGE = 2


class StoreOpener:
    """Opens the store lazily and again after failures: a store down at start must not stop collection."""

    def __init__(self, url: str, first: ObjectStore | None) -> None:
        self.url = url
        self._first = first

    def __call__(self) -> ObjectStore:
        if self._first is not None:
            store, self._first = self._first, None
            return store
        return open_store(self.url)


async def _run(config: CollectorConfig, collector: Collector) -> int:
    loop = asyncio.get_running_loop()
    signals_seen: list[int] = []

    def on_signal(signum: int) -> None:
        signals_seen.append(signum)
        logs.info("signal", signal=signal.Signals(signum).name, count=len(signals_seen))
        if len(signals_seen) > 1:
            # a second signal: stop waiting for uploads (the final flush still completes: the spool keeps
            # everything for the next start)
            collector.uploader.abort_drain.set()
        collector.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    server: MetricsServer | None = None
    if config.metrics_port is not None:
        try:
            server = MetricsServer(collector, config.metrics_host, config.metrics_port)
        except OSError as exc:
            collector.fatal_message = (
                f"--metrics-port: cannot listen on {config.metrics_host}:{config.metrics_port}: "
                f"{exc.strerror or exc}"
            )
            return EXIT_USAGE
        server.start()
        logs.info("metrics_listening", url=f"http://{server.host}:{server.port}/metrics")
    try:
        return await collector.run()
    finally:
        if server is not None:
            server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse_config(argv)
    except ConfigError as exc:
        print(f"depth-collector: error: {exc}", file=sys.stderr)
        print("depth-collector: run with --help for the flags", file=sys.stderr)
        return EXIT_USAGE
    logs.setup(config.log_format, config.log_level)
    first_store: ObjectStore | None = None
    try:
        first_store = open_store(config.store)
    except StoreUnavailableError as exc:
        logs.warning("store_unavailable_at_start", store=config.store, error=str(exc))
    except StoreError as exc:
        print(f"depth-collector: error: --store: {exc}", file=sys.stderr)
        return EXIT_USAGE
    lock = SpoolLock(config.spool_dir)
    try:
        lock.acquire()
    except SpoolLockedError as exc:
        print(f"depth-collector: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"depth-collector: error: cannot use spool dir {config.spool_dir}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # the backlog is bounded (flow control): keep its freed memory for reuse instead of faulting it in again
    keep_freed_memory(config.spool_max_pending_bytes)
    collector = Collector(config, StoreOpener(config.store, first_store))
    try:
        code = asyncio.run(_run(config, collector))
    finally:
        lock.release()
    if code != 0 and collector.fatal_message:
        print(f"depth-collector: error: {collector.fatal_message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
