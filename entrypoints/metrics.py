"""Prometheus metrics, one registry per application so two apps in one test never clash."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.received = Counter(
            "pardot_destination_events_received", "Events received, by type", ["type"], registry=r
        )
        self.refused = Counter(
            "pardot_destination_requests_refused",
            "Requests or events refused at the door, by reason",
            ["reason"],
            registry=r,
        )
        self.outcomes = Counter(
            "pardot_destination_deliveries", "Delivery outcomes, by kind", ["outcome"], registry=r
        )
        self.queue = Gauge(
            "pardot_destination_queue_events",
            "Events in the queue, by state",
            ["state"],
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
