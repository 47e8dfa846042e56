"""Collected runs of one workload on one system, and their summaries."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .workloads import RunResult, Workload


def brief(text: str) -> str:
    """First line, plus the last one when a log tail follows it."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    return f"{lines[0]} ... {lines[-1]}"


@dataclass
class Outcome:
    workload: Workload
    system: str
    unavailable: str | None = None     # reason the system was not run
    runs: list[RunResult] = field(default_factory=list)

    def runs_with(self, status: str) -> list[RunResult]:
        return [r for r in self.runs if r.get("status") == status]

    def metrics(self) -> dict[str, float | None]:
        """Workload metrics over the successful runs (None if there are none)."""
        ok = self.runs_with("ok")
        if not ok:
            return {m.key: None for m in self.workload.metrics}
        return self.workload.aggregate(ok)

    def status_counts(self) -> Counter:
        return Counter(r.get("status", "error") for r in self.runs)

    def failed_jobs(self) -> tuple[int, int]:
        """(failed, completed) summed over every run that reported anything.

        Jobs a hung run never delivered are not counted as failed here; the
        run itself shows up as hung.
        """
        failed = sum(int(r.get("failed", 0)) for r in self.runs)
        completed = sum(int(r.get("completed", 0)) for r in self.runs)
        return failed, completed

    def failure_reasons(self) -> Counter:
        reasons: Counter = Counter()
        for run in self.runs:
            reasons.update(run.get("failure_reasons", {}))
        return reasons

    def problems(self) -> list[str]:
        """One line per attempt that did not finish cleanly (attempts are
        numbered in order, retries included)."""
        lines = []
        for index, run in enumerate(self.runs, 1):
            status = run.get("status")
            if status == "ok" and not run.get("close_hung"):
                continue
            detail = brief(run.get("error", ""))
            if status == "hung" and "completed" in run:
                detail = (f"stalled in {run.get('hung_phase', '?')} after "
                          f"{run['completed']}/{run.get('jobs', '?')} results {detail}").strip()
            if status == "ok":
                detail = "cluster.close() hung (results kept)"
            lines.append(f"attempt {index}: {status}: {detail}")
        return lines

    def to_json(self) -> dict[str, Any]:
        failed, completed = self.failed_jobs()
        return {
            "unavailable": self.unavailable,
            "metrics": self.metrics() if not self.unavailable else None,
            "status_counts": dict(self.status_counts()),
            "failed_jobs": failed,
            "completed_jobs": completed,
            "failure_reasons": dict(self.failure_reasons()),
            "runs": self.runs,
        }
