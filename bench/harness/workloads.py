"""Workload definitions: parameters, limits, and how runs become metrics.

To add a workload: write its client function in bench/loads/, register it in
client.WORKLOADS, and add a Workload entry to WORKLOADS below with its
metrics and aggregate().
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
    own_nodes: bool = False          # the client starts its own nodes (no node per run)
    max_runs: int = 0                # at most this many runs (0: as --runs says)

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


def medians(*keys: str) -> Aggregate:
    def aggregate(runs: list[RunResult]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for key in keys:
            values = [r[key] for r in runs if key in r]
            out[key] = statistics.median(values) if values else None
        return out
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

W2W = replace(
    W2,
    name="W2w",
    title="single-job round-trip latency, warm workers",
    description="W2 with JobCluster(warm_workers=True); dispy has no such mode: its "
                "column is its W2.",
    metrics=[replace(m, label=m.label.replace("W2 latency", "W2w latency").replace(
        "(lower", "(dispy: W2; lower")) for m in W2.metrics],
)

W1W = Workload(
    name="W1w",
    title="throughput, tiny jobs, warm workers",
    description="W1 with JobCluster(warm_workers=True) (each job still runs in a process "
                "apart from the node, reused); dispy has no such mode: its column is its W1.",
    params={"jobs": 2000},
    quick_params={"jobs": 500},
    metrics=[Metric("jobs_per_s", "W1w throughput jobs/s (dispy: W1; higher=better)", True)],
    aggregate=median_of("jobs_per_s"),
    with_floor=True,
)

W3 = Workload(
    name="W3",
    title="bulk data each way",
    description="20 jobs with a 20 MB argument, then 20 jobs returning 20 MB: MB/s each way; "
                "client and node (daemon, process tree) peak memory above their level before.",
    params={"jobs": 20, "size": 20_000_000},
    quick_params={"jobs": 6, "size": 20_000_000},
    metrics=[Metric("mbps_in", "W3 MB/s in (arguments; higher=better)", True),
             Metric("mbps_out", "W3 MB/s out (results; higher=better)", True),
             Metric("client_peak_mb", "W3 client peak MB over base (data held: jobs x 20 MB)",
                    False, "{:.0f}"),
             Metric("node_peak_mb", "W3 node daemon peak MB over base", False, "{:.0f}"),
             Metric("node_tree_peak_mb", "W3 node + its processes peak MB over base", False,
                    "{:.0f}")],
    aggregate=medians("mbps_in", "mbps_out", "client_peak_mb", "node_peak_mb",
                      "node_tree_peak_mb"),
    stall_timeout_s=30.0,
    hard_timeout_s=300.0,
    with_floor=True,
)

W4 = Workload(
    name="W4",
    title="sleep efficiency",
    description="40 x sleep(0.25) on 2 CPUs: ideal 5.0 s over the measured time.",
    params={"jobs": 40, "seconds": 0.25, "cpus": 2},
    quick_params={"jobs": 16, "seconds": 0.25, "cpus": 2},
    metrics=[Metric("efficiency", "W4 fraction of ideal (higher=better)", True, "{:.3f}"),
             Metric("efficiency_warm", "W4 fraction of ideal, warm workers", True, "{:.3f}")],
    aggregate=medians("efficiency", "efficiency_warm"),
    with_floor=True,
)

W5 = Workload(
    name="W5",
    title="client memory per finished job",
    description="20,000 finished jobs held by the program: client RSS growth per job, and "
                "beyond the job's own args and result.",
    params={"jobs": 20_000, "dispy_jobs": 5_000},
    quick_params={"jobs": 5_000, "dispy_jobs": 5_000},
    metrics=[Metric("bytes_per_job", "W5 client bytes per held job (lower=better)", False,
                    "{:.0f}"),
             Metric("beyond_bytes_per_job", "W5 bytes per job beyond args/result", False,
                    "{:.0f}")],
    aggregate=medians("bytes_per_job", "beyond_bytes_per_job"),
    hard_timeout_s=300.0,
)

W6 = Workload(
    name="W6",
    title="scale: many jobs, many nodes",
    description="Warm workers on N dispynode daemons (1 CPU each, loopback): client CPU per "
                "job for a small and a large run on all of them and a large run on 2.",
    params={"nodes": 32, "small": 1_000, "large": 100_000},
    quick_params={"nodes": 8, "small": 500, "large": 10_000},
    metrics=[Metric("jobs_per_s_large", "W6 jobs/s, large run on all nodes", True, "{:.0f}"),
             Metric("cpu_us_small", "W6 client CPU us/job, small run", False),
             Metric("cpu_us_large", "W6 client CPU us/job, large run", False),
             Metric("cpu_us_two_nodes", "W6 client CPU us/job, large run on 2 nodes", False),
             Metric("jobs_ratio", "W6 large/small CPU per job (target <= 1.5)", False,
                    "{:.2f}"),
             Metric("nodes_ratio", "W6 all nodes/2 nodes CPU per job (target <= 1.5)", False,
                    "{:.2f}"),
             Metric("client_peak_mb", "W6 client peak MB over base", False, "{:.0f}")],
    aggregate=medians("jobs_per_s_large", "cpu_us_small", "cpu_us_large", "cpu_us_two_nodes",
                      "jobs_ratio", "nodes_ratio", "client_peak_mb"),
    stall_timeout_s=60.0,
    hard_timeout_s=1200.0,
    systems=("dispylike",),
    own_nodes=True,
    max_runs=1,
)

W7 = Workload(
    name="W7",
    title="channel protection cost",
    description="W1w and W3 with plain frames (benchmark only), secret-sealed frames "
                "(AES-256-GCM, the default) and TLS, each on a fresh node.",
    params={"jobs": 2000, "big_jobs": 10, "size": 20_000_000},
    quick_params={"jobs": 500, "big_jobs": 4, "size": 20_000_000},
    metrics=[Metric(f"{key}_{variant}", f"W7 {label} {variant}{suffix}", True, fmt)
             for key, label, fmt in (("w1w", "W1w jobs/s", "{:.0f}"), ("in", "MB/s in", "{:.0f}"),
                                     ("out", "MB/s out", "{:.0f}"))
             for variant, suffix in (("plain", ""), ("sealed", ""), ("tls", ""))]
    + [Metric(f"{key}_{variant}_ratio", f"W7 {label} {variant} / plain", True, "{:.2f}")
       for key, label in (("w1w", "W1w"), ("in", "MB/s in"), ("out", "MB/s out"))
       for variant in ("sealed", "tls")],
    aggregate=medians(*[f"{k}_{v}" for k in ("w1w", "in", "out")
                        for v in ("plain", "sealed", "tls")],
                      *[f"{k}_{v}_ratio" for k in ("w1w", "in", "out") for v in ("sealed", "tls")]),
    stall_timeout_s=30.0,
    hard_timeout_s=600.0,
    systems=("dispylike",),
    own_nodes=True,
    max_runs=1,
)

WORKLOADS: dict[str, Workload] = {w.name: w for w in (W1, W1W, W2, W2W, W3, W4, W5, W6,
                                                          W7)}
