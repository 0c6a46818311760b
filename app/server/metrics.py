"""Prometheus metrics: requests and their latency by route template, and the database's state.

Counted with plain dicts and rendered in the Prometheus text format on scrape: observing a
request costs a dict update and a bisect, which matters on a path that answers in tens of
microseconds.
"""

from __future__ import annotations

import bisect
import collections
from typing import TYPE_CHECKING

from app.store.base import Database

if TYPE_CHECKING:
    from app.engine.retention import Retention

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(**labels: str) -> str:
    escaped = (f'{k}="{v}"'.replace("\n", " ") for k, v in labels.items())
    return "{" + ",".join(escaped) + "}"


class Metrics:
    def __init__(self, db: Database, runs: collections.Counter[str] | None = None,
                 retention: Retention | None = None) -> None:
        self.db = db
        self.retention = retention
        self.runs = runs if runs is not None else collections.Counter()  # runs started, by trigger kind
        self.requests: collections.Counter[tuple[str, str, int]] = collections.Counter()
        # (method, route) -> [count per bucket..., +Inf count, sum of seconds]
        self.latency: dict[tuple[str, str], list[float]] = {}
        self.counters: collections.Counter[tuple[str, tuple[tuple[str, str], ...]]] = collections.Counter()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered request."""
        self.requests[(method, route, status)] += 1
        histogram = self.latency.get((method, route))
        if histogram is None:
            histogram = self.latency[(method, route)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        histogram[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        histogram[-1] += seconds

    def count(self, name: str, **labels: str) -> None:
        """Add one to a counter of the engine's (runs started, by trigger, ...)."""
        self.counters[(name, tuple(sorted(labels.items())))] += 1

    def render(self) -> str:
        lines = [
            "# HELP flowmill_http_requests_total HTTP requests answered",
            "# TYPE flowmill_http_requests_total counter",
        ]
        for (method, route, status), n in sorted(self.requests.items()):
            lines.append(f"flowmill_http_requests_total{_labels(method=method, route=route, status=str(status))} {n}")
        lines += [
            "# HELP flowmill_http_request_duration_seconds Time to answer an HTTP request",
            "# TYPE flowmill_http_request_duration_seconds histogram",
        ]
        for (method, route), histogram in sorted(self.latency.items()):
            cumulative = 0.0
            for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), histogram[:-1]):
                cumulative += n
                lines.append(
                    f"flowmill_http_request_duration_seconds_bucket{_labels(method=method, route=route, le=bound)} {cumulative:g}"
                )
            lines.append(f"flowmill_http_request_duration_seconds_sum{_labels(method=method, route=route)} {histogram[-1]:.6f}")
            lines.append(f"flowmill_http_request_duration_seconds_count{_labels(method=method, route=route)} {cumulative:g}")
        names = sorted({name for name, _ in self.counters})
        for name in names:
            lines += [f"# TYPE {name} counter"]
            for (counter, labels), n in sorted(self.counters.items()):
                if counter == name:
                    lines.append(f"{name}{_labels(**dict(labels))} {n}")
        lines += ["# HELP flowmill_runs_started_total Runs started, by what triggered them",
                  "# TYPE flowmill_runs_started_total counter"]
        for trigger, n in sorted(self.runs.items()):
            lines.append(f"flowmill_runs_started_total{_labels(trigger=trigger)} {n}")
        if self.retention is not None:
            totals = self.retention.totals
            lines += ["# HELP flowmill_retention_passes_total Retention passes done by this process",
                      "# TYPE flowmill_retention_passes_total counter",
                      f"flowmill_retention_passes_total {self.retention.passes}",
                      "# HELP flowmill_retention_pruned_total Rows retention deleted, by table",
                      "# TYPE flowmill_retention_pruned_total counter"]
            for what, n in (("runs", totals.runs), ("log_lines", totals.log_lines), ("audit_entries", totals.audit_entries)):
                lines.append(f"flowmill_retention_pruned_total{_labels(what=what)} {n}")
        lines += ["# HELP flowmill_db_pool Database connections and queues", "# TYPE flowmill_db_pool gauge"]
        for measure, value in self.db.pool_state().items():
            lines.append(f"flowmill_db_pool{_labels(backend=self.db.dialect, measure=measure)} {value:g}")
        return "\n".join(lines) + "\n"
