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
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import netns, venv  # noqa: E402
from harness.report import render  # noqa: E402
from harness.results import Outcome  # noqa: E402
from harness.runner import run_once  # noqa: E402
from harness.systems import PORT_RANGE, SYSTEMS, System, unavailable_reason  # noqa: E402
from harness.workloads import WORKLOADS, Workload  # noqa: E402

DEFAULT_RUNS = 3


def csv_list(choices: List[str]):
    def parse(text: str) -> List[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        unknown = [x for x in items if x not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}")
        return items
    return parse


def parse_args(argv: List[str]) -> argparse.Namespace:
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
    parser.add_argument("--json", type=Path, default=None,
                        help="also write all raw results to this JSON file")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary work dir (node/client logs)")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else DEFAULT_RUNS
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    return args


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def systems_for(workload: Workload, selected: List[str]) -> List[str]:
    wanted = set(workload.systems) | ({"ppe"} if workload.with_floor else set())
    return [name for name in selected if name in wanted]


def describe(result: Dict) -> str:
    status = result.get("status")
    shown = {k: result[k] for k in ("jobs_per_s", "failed") if k in result}
    numbers = " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in shown.items())
    return f"{status} {numbers} ({result.get('wall_s', '?')}s)".strip()


class Bench:
    """Runs the selected workloads; interleaves systems run by run so that
    slow drift of the machine hits every system alike."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.systems: Dict[str, System] = {n: SYSTEMS[n]() for n in args.systems}
        self.unavailable = {n: unavailable_reason(s) for n, s in self.systems.items()}
        self.next_run_index = {n: 0 for n in self.systems}  # fresh ports per run
        self.results: Dict[str, Dict[str, Outcome]] = {}

    def run(self) -> Dict[str, Dict[str, Outcome]]:
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
        params = workload.params_for(self.args.quick)
        for run in range(1, self.args.runs + 1):
            for name in names:
                if outcomes[name].unavailable:
                    continue
                index = self.next_run_index[name]
                self.next_run_index[name] += 1
                result = run_once(workload, self.systems[name], index, params,
                                  self.workdir / f"{workload.name}-{name}-{run}")
                outcomes[name].runs.append(result)
                log(f"{workload.name} {name} run {run}/{self.args.runs}: {describe(result)}")


def metadata(args: argparse.Namespace) -> Dict:
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


def write_json(path: Path, meta: Dict, results: Dict[str, Dict[str, Outcome]]) -> None:
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
        if args.json is not None:
            write_json(args.json, meta, results)
    finally:
        if args.keep:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    if netns.inside_requested():
        try:
            return run_inside_netns(args)
        except KeyboardInterrupt:  # daemons were already stopped by finally blocks
            log("interrupted")
            return 130
    # Outside: the last chance to reach PyPI, so set up the dispy venv now.
    if "dispy" in args.systems:
        try:
            venv.ensure_dispy_venv()
        except Exception as exc:  # dispy's column then reads n/a
            log(f"could not set up the dispy venv: {exc}")
    netns.reexec_in_private_netns(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
