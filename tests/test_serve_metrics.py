# ruff: noqa: F811 (the module fixture client of test_serve, imported, is named as an argument)
"""``GET /metrics`` scraped from a live server over the ingested spoken clip, parsed with prometheus-client's
own parser: the streams' numbers come from the catalog (what another process, the daemon, wrote there), the
latency histograms from the routes, the plugin faults from the events the plugin manager stored."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from vsalmonn.memory_store.rows.status import StatusReport, upsert_statuses
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.ingest import Encoders
from vsalmonn.plugins import PluginConfig, PluginManager, hookimpl
from vsalmonn.tools.checks import horizon

from .talk_store import Ingested
from .test_serve import TOKEN, client, one_line_detail, serving, settings_of  # noqa: F401 (module fixture)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(c: httpx.Client, **headers: str) -> Samples:
    """Every sample of one scrape, by (name, sorted labels)."""
    response = c.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


class Failing:
    @hookimpl
    def on_frame(self, t: float) -> None:
        raise RuntimeError(f"cannot look at {t}")


def test_the_streams_numbers_come_from_the_catalog(client: httpx.Client, ingested: Ingested) -> None:
    with MemoryStore(ingested.data) as store:
        committed = horizon(store.checkpoints("talk")[0])
        stream_id = store.catalog.stream("talk").id
        before = scrape(client)
        assert one(before, "vsalmonn_catalog_up") == 1
        assert one(before, "vsalmonn_stream_position_seconds", stream="talk") == committed > 30
        assert 0 <= one(before, "vsalmonn_stream_checkpoint_age_seconds", stream="talk") < 3600
        assert ("vsalmonn_stream_lag_seconds", (("stream", "talk"),)) not in before  # nothing reported yet
        # What a daemon in another process reports: the next scrape reads it from the catalog.
        upsert_statuses(store.catalog, [StatusReport(
            stream_id=stream_id, state="running", updated_at=datetime.now(UTC), position=41.0, rate=2.5,
            lag_s=1.25, drops=7, errors=1,
        )])  # fmt: skip
        after = scrape(client)
    assert one(after, "vsalmonn_stream_lag_seconds", stream="talk") == 1.25
    assert one(after, "vsalmonn_stream_dropped_frames_total", stream="talk") == 7
    assert one(after, "vsalmonn_stream_ingest_rate_ratio", stream="talk") == 2.5
    assert one(after, "vsalmonn_stream_errors_total", stream="talk") == 1
    assert 0 <= one(after, "vsalmonn_stream_status_age_seconds", stream="talk") < 60
    assert one(after, "vsalmonn_stream_position_seconds", stream="talk") == committed  # committed, not 41


def test_the_search_histogram_counts_each_search(client: httpx.Client) -> None:
    count = "vsalmonn_search_duration_seconds_count"
    before = scrape(client)
    assert one(before, "vsalmonn_ask_duration_seconds_count") == 0
    assert client.get("/api/search", params={"q": "goodbye", "k": 2}).status_code == 200
    assert client.get("/api/search", params={"q": "goodbye", "k": 0}).status_code == 422  # not answered
    after = scrape(client)
    assert one(after, count) == one(before, count) + 1
    assert one(after, "vsalmonn_search_duration_seconds_sum") > one(
        before, "vsalmonn_search_duration_seconds_sum"
    )
    assert one(after, "vsalmonn_search_duration_seconds_bucket", le="+Inf") == one(after, count)


def test_a_plugin_failure_shows_up(client: httpx.Client, ingested: Ingested) -> None:
    """A plugin disabled in another process (here: a plugin manager over the same store) is counted."""
    name = ("vsalmonn_plugin_failures_total", (("kind", "plugin.disabled"), ("plugin", "failing")))
    assert name not in scrape(client)
    with MemoryStore(ingested.data) as store:
        manager = PluginManager(PluginConfig(max_failures=2), store=store)
        manager.register(Failing(), "failing")
        for t in (1.0, 2.0, 3.0):
            manager.call(
                "on_frame",
                stream="talk",
                t=t,
                frame=np.zeros((4, 4, 3), np.uint8),
                tokens=np.zeros((1, 4)),
                labels=(),
            )
        manager.close()
    assert scrape(client)[name] == 1


def test_metrics_need_the_token_and_survive_a_missing_catalog(
    ingested: Ingested, encoders: Encoders, tmp_path: Path
) -> None:
    with serving(settings_of(ingested.data, token=TOKEN), encoders.text) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            one_line_detail(c.get("/metrics", headers=headers), 401, "token")
            one_line_detail(c.post("/api/ask", json={"question": "x"}, headers=headers), 401, "token")
        good: dict[str, Any] = {"Authorization": f"Bearer {TOKEN}"}
        assert one(scrape(c, **good), "vsalmonn_catalog_up") == 1
    with serving(settings_of(tmp_path / "nothing"), encoders.text) as c:
        samples = scrape(c)
        assert one(samples, "vsalmonn_catalog_up") == 0
        assert not [key for key in samples if key[0].startswith("vsalmonn_stream_")]
    assert not (tmp_path / "nothing").exists()
