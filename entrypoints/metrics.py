"""Prometheus metrics, one registry per application so two apps in one test never clash.

`/metrics` also exports the default registry: the process and Python collectors, and the
retry counters stamina keeps there. The prospect index's figures are read when scraped
(`IndexMetrics`): refreshes from the keepers that count them, the age from the status page's
scrape hook, which reads the store.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from domain.sync.import_lane import ImportLane

log = logging.getLogger(__name__)


class Refreshing(Protocol):
    """What counts index refreshes (domain.index.IndexKeeper)."""

    refreshes: int  # refreshes completed, incremented once per refresh


class IndexMetrics(Collector):
    """`pardot_destination_index_refreshes_total` and `pardot_destination_index_age_seconds`.

    The counter is read from the keepers at each scrape (0 before the first is built). The age
    is left out, rather than exported as NaN, while the index is incomplete or has no
    watermark: an absent series is what Prometheus alerts (`absent()`) and graphs expect.
    """

    def __init__(self) -> None:
        self._keepers: list[Refreshing] = []
        self.age_seconds: float | None = None  # set before each scrape

    def count_refreshes_of(self, keeper: Refreshing) -> None:
        self._keepers.append(keeper)

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "pardot_destination_index_refreshes",
            "Prospect index refreshes this process completed",
            value=sum(keeper.refreshes for keeper in self._keepers),
        )
        if self.age_seconds is not None:
            yield GaugeMetricFamily(
                "pardot_destination_index_age_seconds",
                "Now minus the start of the refresh behind the index's watermark (store clock)",
                value=self.age_seconds,
            )


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # Run before every scrape, to set gauges read from elsewhere (queue age, budget).
    on_scrape: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        r = self.registry
        self.received = Counter(
            "pardot_destination_events_received",
            "Events accepted (durably stored), by type",
            ["type"],
            registry=r,
        )
        self.received_identify = self.received.labels("identify")  # bound once: every request
        self.refused = Counter(
            "pardot_destination_requests_refused",
            "Requests or events refused at the door, by reason",
            ["reason"],
            registry=r,
        )
        self.outcomes = Counter(
            "pardot_destination_deliveries",
            "Delivery outcomes: delivered, unchanged, skipped, rejected, retry, dead",
            ["outcome"],
            registry=r,
        )
        self.queue = Gauge(
            "pardot_destination_queue_events",
            "Events in the queue, by state",
            ["state"],
            registry=r,
        )
        self.oldest_pending = Gauge(
            "pardot_destination_queue_oldest_pending_seconds",
            "Age of the oldest event waiting for delivery (0 when none waits)",
            registry=r,
        )
        self.ready = Gauge("pardot_destination_ready", "1 when deliveries can proceed", registry=r)
        self.api_calls_used = Gauge(
            "pardot_destination_api_calls_used",
            "Pardot API calls counted today (the account's day)",
            registry=r,
        )
        self.api_calls_limit = Gauge(
            "pardot_destination_api_calls_limit", "Pardot's daily API call limit", registry=r
        )
        self.ingest_seconds = Histogram(
            "pardot_destination_ingest_seconds", "Time to store a request durably", registry=r
        )
        self.pardot_calls = Counter(
            "pardot_destination_pardot_calls",
            "Calls to Pardot by operation and outcome (ok, or Pardot's error code)",
            ["operation", "code"],
            registry=r,
        )
        self.token_refreshes = Counter(
            "pardot_destination_token_refreshes",
            "Salesforce access tokens obtained (the first one and every refresh)",
            registry=r,
        )
        # Read from this process's slot meter at each scrape (entrypoints.slot_use); 0 until
        # the container hands one over (`watch_slot_use`).
        self.pardot_slots_busy = Gauge(
            "pardot_destination_pardot_slots_busy_ratio",
            "Busy Pardot slot-seconds / (slots x wall seconds) over the last minute, this process",
            registry=r,
        )
        self.index = IndexMetrics()
        r.register(self.index)

    def watch_imports(self, lane: ImportLane) -> None:
        """The bulk lane's figures, read at each scrape."""
        running = Gauge(
            "pardot_destination_imports_in_progress",
            "Pardot imports this process follows now",
            registry=self.registry,
        )
        running.set_function(lambda: len(lane.running))
        rows = Gauge(
            "pardot_destination_import_rows_in_progress",
            "Rows inside the imports this process follows now",
            registry=self.registry,
        )
        rows.set_function(lambda: sum(i.rows for i in lane.running.values()))
        done = Gauge(
            "pardot_destination_imports_finished",
            "Pardot imports this process followed to their end since it started",
            registry=self.registry,
        )
        done.set_function(lambda: lane.done)
        imported = Gauge(
            "pardot_destination_import_rows_written",
            "Rows Pardot imports wrote for this process since it started",
            registry=self.registry,
        )
        imported.set_function(lambda: lane.rows_imported)

    def watch_slot_use(self, ratio: Callable[[], float]) -> None:
        self.pardot_slots_busy.set_function(ratio)

    async def exposition(self) -> bytes:
        """The text format of this registry and the default one, after the scrape hooks."""
        for hook in self.on_scrape:
            try:
                await hook()
            except Exception:  # a scrape must not fail because one figure is unavailable
                log.exception("a /metrics figure could not be read")
        return generate_latest(self.registry) + generate_latest(REGISTRY)
