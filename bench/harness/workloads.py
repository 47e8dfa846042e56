"""Workload definitions: parameters, limits, and how runs become metrics.

To add a workload (W3 big data, W4 sleep efficiency, W5 memory per job,
W6 scale, ...): write its client function in bench/client.py, register it in
client.WORKLOADS, and add a Workload entry to WORKLOADS below with its
metrics and aggregate().
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RunResult = dict[str, Any]           # one client's JSON result
Aggregate = Callable[[list[RunResult]], dict[str, float | None]]


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool
    fmt: str = "{:.1f}"


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    description: str
    params: dict[str, Any]
    quick_params: dict[str, Any]
    metrics: list[Metric]
    aggregate: Aggregate             # over the runs with status "ok"
    stall_timeout_s: float = 10.0    # no progress this long => "hung"
    hard_timeout_s: float = 120.0    # backstop: client killed after this
    with_floor: bool = False         # also run on the ppe system
    systems: tuple[str, ...] = field(default=("dispy", "dispylike"))

    def params_for(self, quick: bool) -> dict[str, Any]:
        return dict(self.quick_params if quick else self.params)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile: an actually observed sample, no interpolation."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def median_of(key: str) -> Aggregate:
    def aggregate(runs: list[RunResult]) -> dict[str, float | None]:
        values = [r[key] for r in runs if key in r]
        return {key: statistics.median(values) if values else None}
    return aggregate


def latency_aggregate(runs: list[RunResult]) -> dict[str, float | None]:
    # Pool the samples of all runs: more samples make a steadier p99.
    samples = [x for r in runs for x in r.get("latencies_ms", [])]
    if not samples:
        return {"median_ms": None, "p99_ms": None}
    return {"median_ms": statistics.median(samples), "p99_ms": percentile(samples, 99)}


W1 = Workload(
    name="W1",
    title="throughput, tiny jobs",
    description="Submit N jobs of n*n to one 2-CPU node, then wait for all; "
                "jobs/s from first submit to last result (after one warm-up job).",
    params={"jobs": 2000},
    quick_params={"jobs": 500},
    metrics=[Metric("jobs_per_s", "W1 throughput jobs/s (higher=better)", True)],
    aggregate=median_of("jobs_per_s"),
    stall_timeout_s=10.0,
    hard_timeout_s=120.0,
    with_floor=True,
)

W2 = Workload(
    name="W2",
    title="single-job round-trip latency",
    description="After a warm-up job, N sequential submit()+job() round trips; "
                "median and p99 (nearest rank) over all runs' samples.",
    params={"jobs": 200},
    quick_params={"jobs": 50},
    metrics=[Metric("median_ms", "W2 latency median ms (lower=better)", False, "{:.2f}"),
             Metric("p99_ms", "W2 latency p99 ms (lower=better)", False, "{:.2f}")],
    aggregate=latency_aggregate,
    stall_timeout_s=10.0,
    hard_timeout_s=90.0,
)

WORKLOADS: dict[str, Workload] = {w.name: w for w in (W1, W2)}
