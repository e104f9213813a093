"""``GET /metrics``: the server's and the streams' numbers in Prometheus' text format (prometheus-client).

Each app has its own `CollectorRegistry` (not the process's global one): a process may make several apps
(the tests make many), and each counts its own requests. Two kinds of numbers:

- what this server measures itself: the latency of the searches and asks it answered (histograms the routes
  observe);
- what the store says, read at scrape time by `StoreCollector`: each stream's committed position, its last
  status report (lag, drops, ingest rate, errors) and the plugins' faults recorded as events. The daemon may
  be another process than the server, so these come from the catalog's rows, never from objects in memory.
"""

# No `from __future__ import annotations`: FastAPI reads the route's annotations at run time.
import logging
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from vsalmonn.errors import one_line

if TYPE_CHECKING:
    from vsalmonn.memory_store.models import Checkpoint
    from vsalmonn.tools.memory_view import MemoryView

log = logging.getLogger(__name__)

PLUGIN_FAULT_KINDS = ("plugin.failed", "plugin.disabled", "plugin.skipped")
"""The events the plugin manager stores about a plugin's faults (vsalmonn.plugins.manager, .isolation): one
that failed to load, one disabled after failing `max_failures` times in a row, a hook skipped for overruns."""

SEARCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ASK_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)  # a local model writes slowly


class StoreCollector(Collector):
    """The streams' and plugins' numbers, read from the catalog when Prometheus scrapes.

    `view` gives the server's view (it raises while there is no catalog: then only
    ``vsalmonn_catalog_up 0`` is reported).
    """

    def __init__(self, view: Callable[[], "MemoryView"]) -> None:
        self._view = view

    def describe(self) -> list[Metric]:
        return []  # no scrape at registration: the catalog may not exist yet

    def collect(self) -> Iterator[Metric]:
        from vsalmonn.memory_store.rows.events import count_events
        from vsalmonn.memory_store.rows.status import stream_overviews

        up = GaugeMetricFamily(
            "vsalmonn_catalog_up", "1 when the catalog could be read for this scrape, else 0"
        )
        try:
            catalog = self._view().store.catalog
            overviews = stream_overviews(catalog)
            faults = count_events(catalog, PLUGIN_FAULT_KINDS)
        except Exception as exc:  # no catalog yet, or one that cannot be read: say so, keep serving
            log.debug("metrics: catalog unreadable: %s", one_line(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        label = ["stream"]
        position = GaugeMetricFamily(
            "vsalmonn_stream_position_seconds",
            "stream seconds committed: the newest checkpoint's source offset (where ingestion resumes)",
            labels=label,
        )
        checkpoint_age = GaugeMetricFamily(
            "vsalmonn_stream_checkpoint_age_seconds",
            "seconds since the newest checkpoint was committed",
            labels=label,
        )
        lag = GaugeMetricFamily(
            "vsalmonn_stream_lag_seconds",
            "how far ingestion is behind a live source, as last reported",
            labels=label,
        )
        rate = GaugeMetricFamily(
            "vsalmonn_stream_ingest_rate_ratio",
            "stream seconds ingested per wall-clock second (a multiple of real time), as last reported",
            labels=label,
        )
        drops = CounterMetricFamily(
            "vsalmonn_stream_dropped_frames",
            "frames dropped because encoding could not keep up with a live source (since its process began)",
            labels=label,
        )
        errors = CounterMetricFamily(
            "vsalmonn_stream_errors", "errors the ingesting process counted (since it started)", labels=label
        )
        status_age = GaugeMetricFamily(
            "vsalmonn_stream_status_age_seconds",
            "seconds since the ingesting process last reported on the stream (a large value: it stopped)",
            labels=label,
        )
        now = datetime.now(UTC)
        for overview in overviews:
            name = [overview.stream.name]
            checkpoint, status = overview.checkpoint, overview.status
            if checkpoint is not None:
                position.add_metric(name, _committed(checkpoint))
                checkpoint_age.add_metric(name, _age(now, checkpoint.created_at))
            if status is not None:
                if status.lag_s is not None:
                    lag.add_metric(name, status.lag_s)
                if status.rate is not None:
                    rate.add_metric(name, status.rate)
                drops.add_metric(name, status.drops or 0)
                errors.add_metric(name, status.errors or 0)
                status_age.add_metric(name, _age(now, status.updated_at))
        yield from (position, checkpoint_age, lag, rate, drops, errors, status_age)

        failures = CounterMetricFamily(
            "vsalmonn_plugin_failures",
            "plugin faults recorded as events in the catalog, by plugin and event kind (plugin.failed: it "
            "could not load; plugin.disabled: a hook failed too often in a row; plugin.skipped: it overran)",
            labels=["plugin", "kind"],
        )
        for (kind, source), count in sorted(faults.items(), key=lambda item: (item[0][1] or "", item[0][0])):
            failures.add_metric([source or "", kind], count)
        yield failures


def _committed(checkpoint: "Checkpoint") -> float:
    """Stream seconds a checkpoint row commits (as `tools.checks.horizon` reads a checkpoint's info)."""
    for value in (checkpoint.source_offset, checkpoint.t_end):
        if value is not None and math.isfinite(value):
            return float(value)
    return 0.0


def _age(now: datetime, then: datetime) -> float:
    return max(0.0, (now - (then if then.tzinfo else then.replace(tzinfo=UTC))).total_seconds())


class ServeMetrics:
    """One app's registry: its latency histograms and the store's collector."""

    def __init__(self, view: Callable[[], "MemoryView"]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.search_seconds = Histogram(
            "vsalmonn_search_duration_seconds", "time to answer GET /api/search (answered searches)",
            buckets=SEARCH_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.ask_seconds = Histogram(
            "vsalmonn_ask_duration_seconds",
            "time to answer POST /api/ask, to its last word (answered questions, streamed or not)",
            buckets=ASK_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.registry.register(StoreCollector(view))

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape's body and content type: Prometheus' text format (0.0.4) unless `accept` (the
        request's Accept header) asks for a newer one or for OpenMetrics, as prometheus-client negotiates."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class Timer:
    """Seconds since it was made; `observe(histogram)` records them."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def observe(self, histogram: Histogram) -> None:
        histogram.observe(time.perf_counter() - self.started)


def router(metrics: ServeMetrics, guard: list[object]) -> APIRouter:
    routes = APIRouter()

    @routes.get("/metrics", dependencies=guard, tags=["health"], response_class=Response)  # type: ignore[arg-type]
    def scrape(request: Request) -> Response:
        """The server's and the streams' numbers in Prometheus' text format (docs/serve.md lists them)."""
        body, content_type = metrics.exposition(request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})

    return routes


__all__ = ["PLUGIN_FAULT_KINDS", "ServeMetrics", "StoreCollector", "Timer", "router"]
