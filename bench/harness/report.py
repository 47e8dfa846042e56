"""Plain-text comparison table: workload | dispy | dispylike | ratio | ppe floor | dl/floor."""
from __future__ import annotations

from .results import Outcome
from .workloads import Metric, Workload

HEADER = ["workload", "dispy", "dispylike", "ratio dl/dispy", "ppe floor", "dl/floor"]
NOT_RUN = "-"


def metric_cell(outcome: Outcome | None, metric: Metric) -> str:
    if outcome is None:
        return NOT_RUN
    if outcome.unavailable:
        return "n/a"
    value = outcome.metrics().get(metric.key)
    counts = outcome.status_counts()
    if value is None:
        # No successful run: say why instead of showing a number.
        if counts.get("hung"):
            return "hung"
        return "error" if counts.get("error") else "n/a"
    text = metric.fmt.format(value)
    bad = {k: v for k, v in counts.items() if k != "ok"}
    if bad:
        text += " [" + ", ".join(f"{v} {k}" for k, v in sorted(bad.items())) + "]"
    return text


def ratio_cell(base: Outcome | None, other: Outcome | None, metric: Metric) -> str:
    """dispylike / dispy for the metric; the row label says which way is better."""
    if base is None or other is None:
        return NOT_RUN
    values = []
    for outcome in (base, other):
        if outcome.unavailable:
            return "n/a"
        values.append(outcome.metrics().get(metric.key))
    if values[0] is None or values[1] is None or values[0] == 0:
        return "n/a"
    return f"{values[1] / values[0]:.2f}x"


def failed_cell(outcome: Outcome | None) -> str:
    if outcome is None:
        return NOT_RUN
    if outcome.unavailable or not outcome.runs:
        return "n/a"
    failed, completed = outcome.failed_jobs()
    return f"{failed}/{completed}"


def runs_cell(outcome: Outcome | None) -> str:
    if outcome is None:
        return NOT_RUN
    if outcome.unavailable:
        return "n/a"
    counts = outcome.status_counts()
    return ", ".join(f"{counts[k]} {k}" for k in ("ok", "hung", "error") if counts.get(k)) or "0"


def workload_rows(workload: Workload, outcomes: dict[str, Outcome]) -> list[list[str]]:
    dispy, dl, ppe = (outcomes.get(n) for n in ("dispy", "dispylike", "ppe"))
    rows = []
    for metric in workload.metrics:
        rows.append([metric.label, metric_cell(dispy, metric), metric_cell(dl, metric),
                     ratio_cell(dispy, dl, metric), metric_cell(ppe, metric),
                     ratio_cell(ppe, dl, metric)])
    rows.append([f"{workload.name} failed jobs / results", failed_cell(dispy), failed_cell(dl),
                 NOT_RUN, failed_cell(ppe), NOT_RUN])
    rows.append([f"{workload.name} runs", runs_cell(dispy), runs_cell(dl), NOT_RUN,
                 runs_cell(ppe), NOT_RUN])
    return rows


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]

    def line(cells: list[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([line(HEADER), rule, *(line(r) for r in rows)])


def notes(results: dict[str, dict[str, Outcome]]) -> list[str]:
    """Why cells say n/a / hung / error, and what failed jobs failed with."""
    out = []
    for wname, outcomes in results.items():
        for system, outcome in outcomes.items():
            prefix = f"{wname} {system}"
            if outcome.unavailable:
                out.append(f"{prefix}: n/a: {outcome.unavailable}")
                continue
            out.extend(f"{prefix} {line}" for line in outcome.problems())
            for reason, count in outcome.failure_reasons().most_common(3):
                out.append(f"{prefix}: {count} failed job(s): {reason}")
    return out


def render(results: dict[str, dict[str, Outcome]], workloads: dict[str, Workload]) -> str:
    rows: list[list[str]] = []
    for wname, outcomes in results.items():
        rows.extend(workload_rows(workloads[wname], outcomes))
    text = format_table(rows)
    extra = notes(results)
    if extra:
        text += "\n\nnotes:\n" + "\n".join("  " + n for n in extra)
    return text
