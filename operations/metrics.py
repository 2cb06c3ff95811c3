"""Prometheus metrics: recorded once per call, where the Meter settles or releases it, and read
by `/metrics` from every worker process.

Each process writes its samples to memory-mapped files in PROMETHEUS_MULTIPROC_DIR (set by
project/settings.py before anything imports prometheus_client), and a scrape adds up the
files of every process, so counts stay right whichever worker answers `/metrics`. Recording
is a few dictionary look-ups and memory writes: microseconds on the hot path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from operations.logs import request_logged

logger = logging.getLogger(__name__)

LABELS = ["provider", "model"]
# Seconds: from a fast cached answer to a long generation.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)

REQUESTS = Counter("llm_requests", "LLM calls that ended, by outcome", [*LABELS, "status"])
ERRORS = Counter("llm_errors", "LLM calls that did not end well, by error code", [*LABELS, "code"])
LATENCY = Histogram("llm_request_duration_seconds", "Whole call", LABELS, buckets=LATENCY_BUCKETS)
TTFT = Histogram(
    "llm_time_to_first_token_seconds", "Until the first token", LABELS, buckets=TTFT_BUCKETS
)
TOKENS = Counter("llm_tokens", "Tokens metered", [*LABELS, "kind"])
CREDITS = Counter("llm_credits_spent", "Credits charged (whole credits)", LABELS)
OPEN_STREAMS = Gauge("llm_open_streams", "Streamed calls in progress", multiprocess_mode="livesum")

# This process's streams in progress, so a stream is counted open once and closed once.
_streams: set[str] = set()


def multiproc_dir() -> Path:
    return Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def stream_opened(*, request_id: str) -> None:
    """Count a streamed call as open (its hold is taken); `call_observed` closes it."""
    if request_id not in _streams:
        _streams.add(request_id)
        OPEN_STREAMS.inc()


def call_observed(*, record: dict, key_prefix: str = "") -> None:
    """Record one call that ended (settled or released): its counters, histograms and its one
    log line. `record` is the Meter's usage record (never any prompt or completion text)."""
    try:
        _observe(record)
    except Exception:  # metrics must never break a call that was already charged
        logger.exception("Could not record the metrics of request %s.", record.get("request_id"))
    request_logged(record=record, key_prefix=key_prefix)


class _Series:
    """The labelled series of one (provider, model), looked up once: `labels()` checks and
    locks on every call, and a call records up to seven samples."""

    __slots__ = ("completion", "credits", "errors", "latency", "prompt", "requests", "ttft")

    def __init__(self, provider: str, model: str) -> None:
        self.latency = LATENCY.labels(provider, model)
        self.ttft = TTFT.labels(provider, model)
        self.prompt = TOKENS.labels(provider, model, "prompt")
        self.completion = TOKENS.labels(provider, model, "completion")
        self.credits = CREDITS.labels(provider, model)
        self.requests = {}  # status -> its counter
        self.errors = {}  # error code -> its counter


_series: dict[tuple[str, str], _Series] = {}


def _observe(record: dict) -> None:
    provider, model, status = record["provider"], record["model"], record["status"]
    if record["request_id"] in _streams:
        _streams.discard(record["request_id"])
        OPEN_STREAMS.dec()
    series = _series.get((provider, model))
    if series is None:
        series = _series.setdefault((provider, model), _Series(provider, model))
    counter = series.requests.get(status)
    if counter is None:
        counter = series.requests[status] = REQUESTS.labels(provider, model, status)
    counter.inc()
    if status != "ok":
        code = record["error_code"] or status
        counter = series.errors.get(code)
        if counter is None:
            counter = series.errors[code] = ERRORS.labels(provider, model, code)
        counter.inc()
    series.latency.observe(record["latency_ms"] / 1000)
    if record["ttft_ms"] is not None:
        series.ttft.observe(record["ttft_ms"] / 1000)
    if record["prompt_tokens"]:
        series.prompt.inc(record["prompt_tokens"])
    if record["completion_tokens"]:
        series.completion.inc(record["completion_tokens"])
    if record["credits"]:
        series.credits.inc(record["credits"] / 1_000_000)


class HoldsCollector(Collector):
    """Holds outstanding, read from the database at scrape time: right across processes and
    restarts, and nothing to record on the hot path."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.db import DatabaseError
        from django.db.models import Count, Sum

        from billing.models import CreditHold

        try:
            held = CreditHold.objects.filter(status=CreditHold.Status.HELD).aggregate(
                count=Count("id"), amount=Sum("amount")
            )
        except DatabaseError:  # the other metrics are still worth a scrape
            logger.warning("Holds outstanding left out of /metrics: the database is unreachable.")
            return
        yield GaugeMetricFamily("llm_holds_outstanding", "Credit holds open", held["count"])
        yield GaugeMetricFamily(
            "llm_holds_outstanding_credits",
            "Credits reserved by open holds",
            (held["amount"] or 0) / 1_000_000,
        )


def metrics_text() -> bytes:
    """Return every process's metrics in Prometheus text format."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(HoldsCollector())
    return generate_latest(registry)


def forget_dead_processes() -> None:
    """Drop the live gauges of worker processes that are gone (a restart, a crashed worker):
    their open streams are no longer open."""
    directory = multiproc_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), str(directory))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
