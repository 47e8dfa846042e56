#!/usr/bin/env python3
"""Benchmark real dispy 4.15.2 against dispylike, side by side.

    python bench/run.py [--quick] [--runs N] [--only W1,W2]
                        [--systems dispy,dispylike,ppe] [--json out.json] [--keep]

Runs entirely inside a private network namespace holding only `lo` (the
script re-executes itself under `unshare --net`; needs root).  See
bench/README.md for what each workload measures.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import netns, systems, venv  # noqa: E402
from harness.paths import REPO_DIR  # noqa: E402
from harness.report import render  # noqa: E402
from harness.results import Outcome  # noqa: E402
from harness.runner import run_once  # noqa: E402
from harness.systems import PORT_RANGE, SYSTEMS, System, unavailable_reason  # noqa: E402
from harness.workloads import WORKLOADS, Workload  # noqa: E402

DEFAULT_RUNS = 3
# dispy's W1 hangs in a third to half of the runs; a couple of retries make it
# likely that the median still has --runs samples behind it.
DEFAULT_RETRIES = 2


def csv_list(choices: list[str]):
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        unknown = [x for x in items if x not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}")
        return items
    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark real dispy 4.15.2 against dispylike (inside a private netns).")
    parser.add_argument("--quick", action="store_true",
                        help="fewer jobs and 1 run per workload (smoke test)")
    parser.add_argument("--runs", type=int, default=None,
                        help=f"runs per workload and system (default {DEFAULT_RUNS}, --quick: 1)")
    parser.add_argument("--only", type=csv_list(list(WORKLOADS)), default=list(WORKLOADS),
                        help="comma-separated workloads, e.g. W1,W2")
    parser.add_argument("--systems", type=csv_list(list(SYSTEMS)), default=list(SYSTEMS),
                        help="comma-separated systems: dispy,dispylike,ppe")
    parser.add_argument("--retries", type=int, default=DEFAULT_RETRIES,
                        help="extra attempts per workload and system for runs that hang "
                             f"(default {DEFAULT_RETRIES}); hung attempts stay in the report")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write all raw results to this JSON file")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary work dir (node/client logs)")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else DEFAULT_RUNS
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    if args.retries < 0:
        parser.error("--retries must be >= 0")
    return args


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def systems_for(workload: Workload, selected: list[str]) -> list[str]:
    wanted = set(workload.systems) | ({"ppe"} if workload.with_floor else set())
    return [name for name in selected if name in wanted]


def describe(result: dict) -> str:
    status = result.get("status")
    shown = {k: result[k] for k in ("jobs_per_s", "failed") if k in result}
    numbers = " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in shown.items())
    return f"{status} {numbers} ({result.get('wall_s', '?')}s)".strip()


def worth_retrying(result: dict) -> bool:
    """Retry only the intermittent kind of hang: one that stalled after the
    warm-up job had worked.  A run that never got a first result hangs the
    same way every time, and retrying would just burn time."""
    return (result.get("status") == "hung"
            and result.get("hung_phase") not in (None, "setup", "warm-up"))


class Bench:
    """Runs the selected workloads; interleaves systems run by run so that
    slow drift of the machine hits every system alike."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.systems: dict[str, System] = {n: SYSTEMS[n]() for n in args.systems}
        self.unavailable = {n: unavailable_reason(s) for n, s in self.systems.items()}
        self.next_run_index = {n: 0 for n in self.systems}  # fresh ports per run
        self.results: dict[str, dict[str, Outcome]] = {}

    def run(self) -> dict[str, dict[str, Outcome]]:
        for name, reason in self.unavailable.items():
            if reason:
                log(f"{name}: n/a ({reason})")
        for wname in self.args.only:
            self.run_workload(WORKLOADS[wname])
        return self.results

    def run_workload(self, workload: Workload) -> None:
        names = systems_for(workload, self.args.systems)
        outcomes = {n: Outcome(workload, n, self.unavailable[n]) for n in names}
        self.results[workload.name] = outcomes
        retries_left = {n: self.args.retries for n in names}
        runs = min(self.args.runs, workload.max_runs or self.args.runs)
        for run in range(1, runs + 1):
            for name in names:
                if outcomes[name].unavailable:
                    continue
                while True:
                    result = self.attempt(workload, name, run)
                    outcomes[name].runs.append(result)
                    if not worth_retrying(result) or retries_left[name] == 0:
                        break
                    retries_left[name] -= 1
                    log(f"{workload.name} {name} run {run}/{runs}: hung, retrying "
                        f"({retries_left[name]} retries left)")

    def attempt(self, workload: Workload, name: str, run: int) -> dict:
        index = self.next_run_index[name]
        self.next_run_index[name] += 1
        result = run_once(workload, self.systems[name], index,
                          workload.params_for(self.args.quick),
                          self.workdir / f"{workload.name}-{name}-{index}")
        log(f"{workload.name} {name} run {run}/{self.args.runs}: {describe(result)}")
        return result


def metadata(args: argparse.Namespace) -> dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host_python": sys.version.split()[0],
        "dispy_version": venv.installed_dispy_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "runs": args.runs,
        "quick": args.quick,
        "params": {w: WORKLOADS[w].params_for(args.quick) for w in args.only},
    }


def write_json(path: Path, meta: dict, results: dict[str, dict[str, Outcome]]) -> None:
    data = {"meta": meta,
            "results": {w: {s: o.to_json() for s, o in outs.items()}
                        for w, outs in results.items()}}
    path.write_text(json.dumps(data, indent=2) + "\n")
    log(f"wrote {path}")


def run_inside_netns(args: argparse.Namespace) -> int:
    netns.prepare_private_netns(PORT_RANGE)
    # SIGTERM -> SystemExit so the finally blocks stop every daemon we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="dispybench-"))
    try:
        meta = metadata(args)
        results = Bench(args, workdir).run()
        print(f"dispy vs dispylike benchmark, {meta['date']}, {meta['cpus']} cpus, "
              f"runs={args.runs}{' (quick)' if args.quick else ''}, "
              f"dispy {meta['dispy_version']}, host python {meta['host_python']}")
        print(render(results, WORKLOADS))
        if not args.keep and any(o.problems() for outs in results.values()
                                 for o in outs.values()):
            log("some runs did not finish cleanly; rerun with --keep to inspect "
                "node/client logs")
        if args.json is not None:
            write_json(args.json, meta, results)
    finally:
        if args.keep:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if netns.inside_requested():
        try:
            return run_inside_netns(args)
        except KeyboardInterrupt:  # daemons were already stopped by finally blocks
            log("interrupted")
            return 130
    if "dispylike" in args.systems and not systems.byte_compile(
            os.environ.get("DISPYBENCH_DISPYLIKE_PATH") or str(REPO_DIR)):
        log("could not byte-compile every dispylike module")
    # Outside: the last chance to reach PyPI, so set up the dispy venv now.
    if "dispy" in args.systems:
        try:
            venv.ensure_dispy_venv()
        except Exception as exc:  # dispy's column then reads n/a
            log(f"could not set up the dispy venv: {exc}")
    netns.reexec_in_private_netns(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
