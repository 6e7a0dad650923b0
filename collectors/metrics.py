"""Prometheus ``/metrics`` and ``/healthz``, read from the collector's plain counters at scrape time.

The hot path only increments integer attributes; this module turns them into metric families when
Prometheus scrapes, so metrics cost nothing per message. The server binds to 127.0.0.1 by default.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector as PromCollector

from collectors.state import LATENCY_BUCKETS

if TYPE_CHECKING:
    from collectors.collector import Collector

P = "depth_collector_"


class CollectorMetrics(PromCollector):
    """Builds every metric family from one :class:`Collector`."""

    def __init__(self, collector: Collector) -> None:
        self.c = collector

    def collect(self) -> Iterator[Metric]:
        c = self.c
        now_ns = time.time_ns()
        info = GaugeMetricFamily(
            P + "info", "collector identity", labels=["collector_id", "market", "session"]
        )
        info.add_metric([c.config.collector_id, c.config.market, c.session], 1)
        yield info

        msgs = CounterMetricFamily(P + "messages", "websocket frames received", labels=["symbol", "kind"])
        byts = CounterMetricFamily(P + "bytes", "websocket frame bytes received", labels=["symbol", "kind"])
        age = GaugeMetricFamily(
            P + "last_message_age_seconds", "seconds since the last depth frame", labels=["symbol"]
        )
        gaps = CounterMetricFamily(P + "gaps", "update-id continuity breaks seen live", labels=["symbol"])
        missing = CounterMetricFamily(
            P + "missing_ids", "update ids skipped by continuity breaks (spot: exact)", labels=["symbol"]
        )
        dups = CounterMetricFamily(
            P + "duplicate_events", "events at or below the last id seen", labels=["symbol"]
        )
        snaps = CounterMetricFamily(P + "snapshots", "REST snapshots", labels=["symbol", "result"])
        malformed = CounterMetricFamily(
            P + "malformed_frames_by_symbol", "frames of a symbol that could not be parsed", labels=["symbol"]
        )
        dropped = CounterMetricFamily(
            P + "spool_dropped_lines_by_symbol", "lines not spooled: disk budget exhausted", labels=["symbol"]
        )
        lat = HistogramMetricFamily(
            P + "receive_latency_seconds", "local receive time minus exchange event time E", labels=["symbol"]
        )
        for st in c.symbols.values():
            msgs.add_metric([st.symbol, "depth"], st.messages)
            msgs.add_metric([st.symbol, "book_ticker"], st.book_ticker_messages)
            byts.add_metric([st.symbol, "depth"], st.bytes)
            byts.add_metric([st.symbol, "book_ticker"], st.book_ticker_bytes)
            if st.last_receive_ns:
                age.add_metric([st.symbol], (now_ns - st.last_receive_ns) / 1e9)
            gaps.add_metric([st.symbol], st.continuity.gaps)
            missing.add_metric([st.symbol], st.continuity.missing_ids)
            dups.add_metric([st.symbol], st.continuity.duplicates)
            snaps.add_metric([st.symbol, "ok"], st.snapshots)
            snaps.add_metric([st.symbol, "error"], st.snapshot_errors)
            malformed.add_metric([st.symbol], st.malformed)
            dropped.add_metric([st.symbol], st.dropped_lines)
            buckets = []
            acc = 0
            for bound, n in zip((*LATENCY_BUCKETS, float("inf")), st.latency_buckets, strict=True):
                acc += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), acc))
            lat.add_metric([st.symbol], buckets, st.latency_sum_ms / 1000.0)
        yield from (msgs, byts, age, gaps, missing, dups, snaps, malformed, dropped, lat)

        rec = CounterMetricFamily(P + "reconnects", "websocket reconnects", labels=["kind"])
        for kind in ("planned", "unplanned"):
            rec.add_metric([kind], c.reconnects.get(kind, 0))
        yield rec
        yield CounterMetricFamily(
            P + "connect_failures", "failed connection attempts", value=c.connect_failures
        )
        yield GaugeMetricFamily(
            P + "connections_open",
            "open websocket connections",
            value=sum(1 for g in c.groups if g.current is not None),
        )
        yield GaugeMetricFamily(P + "connections_configured", "connection groups", value=len(c.groups))
        yield CounterMetricFamily(
            P + "malformed_frames", "frames that could not be parsed", value=c.malformed_frames
        )
        yield CounterMetricFamily(
            P + "server_shutdown_notices", "serverShutdown events", value=c.server_shutdowns
        )

        sp = c.spool
        yield GaugeMetricFamily(
            P + "spool_bytes", "bytes in the local spool (journal + outbox)", value=sp.bytes_on_disk
        )
        yield GaugeMetricFamily(P + "spool_max_bytes", "disk budget of the spool", value=sp.max_bytes)
        yield GaugeMetricFamily(
            P + "spool_accepting", "1 while the spool is within its budget", value=int(sp.accepting)
        )
        yield CounterMetricFamily(
            P + "spool_dropped_lines", "lines not spooled: disk budget exhausted", value=sp.dropped_lines
        )
        yield CounterMetricFamily(P + "spool_segments", "spool segments rolled", value=sp.segments_rolled)
        yield CounterMetricFamily(P + "spool_fsyncs", "spool fsyncs", value=sp.fsyncs)
        yield GaugeMetricFamily(
            P + "spool_pending_lines",
            "lines received and not yet written and fsync'd (the writer's backlog)",
            value=len(sp.pending),
        )
        yield GaugeMetricFamily(
            P + "spool_pending_bytes",
            "bytes of lines received and not yet taken by the spool writer (bounded by flow control)",
            value=sp.pending_bytes,
        )
        yield GaugeMetricFamily(
            P + "spool_max_pending_bytes",
            "backlog past which socket reading pauses (--spool-max-pending-bytes)",
            value=sp.max_pending_bytes,
        )
        flow = c.read_flow
        yield GaugeMetricFamily(P + "read_paused", "1 while socket reading is paused", value=int(flow.paused))
        yield CounterMetricFamily(
            P + "read_pauses", "socket reading paused for the spool writer to catch up", value=flow.pauses
        )
        yield CounterMetricFamily(
            P + "read_paused_seconds",
            "seconds socket reading was paused, in total",
            value=flow.paused_seconds,
        )
        yield CounterMetricFamily(
            P + "read_pause_timeouts",
            "pauses ended after 5 s because the spool writer took nothing (hung disk?)",
            value=flow.timeouts,
        )
        yield CounterMetricFamily(
            P + "spool_write_errors", "failed spool writes (disk full, I/O error)", value=sp.write_errors
        )

        up = c.uploader
        oldest = up.oldest_pending_ns()
        yield GaugeMetricFamily(
            P + "upload_pending_objects", "raw objects waiting for upload", value=up.pending_count
        )
        yield GaugeMetricFamily(
            P + "upload_lag_seconds",
            "age of the oldest receive time not yet in the store (0 when nothing waits)",
            value=0.0 if oldest is None else max(0.0, (now_ns - oldest) / 1e9),
        )
        reqs = CounterMetricFamily(
            P + "store_requests", "object store requests by kind (S3 bills them)", labels=["kind"]
        )
        if c.store_requests is not None:
            for kind, n in sorted(c.store_requests.snapshot().items()):
                reqs.add_metric([kind], n)
        yield reqs
        yield CounterMetricFamily(
            P + "uploaded_objects", "raw objects confirmed by the store", value=up.uploaded_objects
        )
        yield CounterMetricFamily(
            P + "uploaded_bytes", "raw object bytes confirmed by the store", value=up.uploaded_bytes
        )
        yield CounterMetricFamily(P + "upload_failures", "failed upload attempts", value=up.failures)
        yield CounterMetricFamily(
            P + "upload_conflicts",
            "leftovers whose key holds different data in the store (kept locally)",
            value=up.conflicts,
        )

        sched = c.snapshots
        queue = GaugeMetricFamily(
            P + "snapshot_queue", "snapshot requests waiting for REST weight", labels=["priority"]
        )
        queue.add_metric(["urgent"], sched.urgent_waiting)
        queue.add_metric(["periodic"], sched.queue_length - sched.urgent_waiting)
        yield queue
        yield GaugeMetricFamily(
            P + "snapshots_in_flight", "snapshot requests in flight", value=sched.in_flight
        )
        first = GaugeMetricFamily(
            P + "first_snapshot_seconds",
            "seconds from a symbol's start to its first stored snapshot",
            labels=["symbol"],
        )
        anchored = 0
        for st in c.symbols.values():
            if st.first_snapshot_s is not None:
                anchored += 1
                first.add_metric([st.symbol], st.first_snapshot_s)
        yield first
        yield GaugeMetricFamily(P + "symbols", "symbols being captured", value=len(c.symbols))
        yield CounterMetricFamily(
            P + "symbols_listed", "symbols started while running (--symbols-from exchange)", value=c.listed
        )
        yield CounterMetricFamily(
            P + "symbols_delisted", "symbols stopped while running (left exchangeInfo)", value=c.delisted
        )
        yield GaugeMetricFamily(
            P + "symbols_anchored", "symbols with at least one stored snapshot", value=anchored
        )
        yield GaugeMetricFamily(
            P + "symbols_unknown",
            "symbols the exchange answered -1121 (unknown/delisted) for",
            value=sum(st.unknown for st in c.symbols.values()),
        )
        unknown = CounterMetricFamily(
            P + "unknown_symbol_errors", "-1121 answers to snapshots", labels=["symbol"]
        )
        for st in c.symbols.values():
            if st.unknown_errors:
                unknown.add_metric([st.symbol], st.unknown_errors)
        yield unknown

        b = c.budget
        yield GaugeMetricFamily(
            P + "rest_weight_used", "REST weight spent in the last 60 s (own count)", value=b.used()
        )
        if b.exchange_used is not None:
            yield GaugeMetricFamily(
                P + "rest_exchange_weight_used",
                "the exchange's X-MBX-USED-WEIGHT-1M at the last answer",
                value=b.exchange_used,
            )
        yield CounterMetricFamily(P + "rest_429", "REST 429 answers (rate limited)", value=b.rate_limited)
        yield CounterMetricFamily(P + "rest_418", "REST 418 answers (IP banned)", value=b.banned)
        yield GaugeMetricFamily(
            P + "rest_paused_seconds",
            "seconds until REST calls resume",
            value=max(0.0, b.paused_until - time.monotonic()),
        )
        if c.clock_offset_s is not None:
            yield GaugeMetricFamily(
                P + "clock_offset_seconds",
                "exchange server time minus local time (estimate)",
                value=c.clock_offset_s,
            )
        yield CounterMetricFamily(P + "clock_warnings", "clock warnings logged", value=c.clock_warnings)
        yield GaugeMetricFamily(
            P + "uptime_seconds", "seconds since start", value=time.monotonic() - c.started_monotonic
        )


def health(collector: Collector) -> tuple[bool, dict[str, object]]:
    """Healthy while every connection group is connected and the spool writer works."""
    open_groups = sum(1 for g in collector.groups if g.current is not None)
    ok = (
        open_groups == len(collector.groups)
        and collector.spool.writer_error is None
        and not collector.stop_event.is_set()
    )
    return ok, {
        "status": "ok" if ok else "degraded",
        "connections_open": open_groups,
        "connections_configured": len(collector.groups),
        "spool_bytes": collector.spool.bytes_on_disk,
        "spool_accepting": collector.spool.accepting,
        "upload_pending_objects": collector.uploader.pending_count,
        "stopping": collector.stop_event.is_set(),
    }


class MetricsServer:
    """``/metrics`` and ``/healthz`` over HTTP in a daemon thread."""

    def __init__(self, collector: Collector, host: str, port: int) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(CollectorMetrics(collector))
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/metrics":
                    body, status, ctype = generate_latest(registry), 200, CONTENT_TYPE_LATEST
                elif path == "/healthz":
                    ok, doc = health(collector)
                    body, status, ctype = orjson.dumps(doc), 200 if ok else 503, "application/json"
                else:
                    body, status, ctype = b"not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = host
        self._thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
