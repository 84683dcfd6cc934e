"""OpenMP thread settings against idle and busy cores: `sarseg demo` (short) under each policy and load.

    python benchmarks/thread_policy.py [--repeats 3] [--policies old passive ...] [--loads idle busy twin]
                                       [--steps 30 60] [--timeout 300] [--json FILE]

Each measurement is a fresh ``python -m sarseg demo`` process whose environment holds the policy's
variables (read by libgomp when torch loads). Loads: ``idle``; ``busy``, one spinning process per core
(``yes > /dev/null``); ``twin``, a second identical demo at the same time (two jobs, or a test run beside
a job). The number is the demo's own ``seconds`` (phantoms, pretraining, fine-tuning, segmentation; not
Python's start-up); for ``twin`` the mean of both demos. Runs go round-robin over the policies, so drift
in the machine's other load spreads over all of them; the table gives the median, min and max over the
repeats and the median 1-minute load average seen before the runs (other programs' load included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
ALL_CORES = str(CORES)
POLICIES = {  # name -> environment; "old" is what torch did before sarseg set a policy
    "old": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "300000", "OMP_NUM_THREADS": ALL_CORES},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "", "OMP_NUM_THREADS": ALL_CORES},
    "spin1k": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "1000", "OMP_NUM_THREADS": ALL_CORES},
    "spin10k": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "10000", "OMP_NUM_THREADS": ALL_CORES},
    "spin100k": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "100000", "OMP_NUM_THREADS": ALL_CORES},
    "1thread": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "300000", "OMP_NUM_THREADS": "1"},
    "sarseg": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "", "OMP_NUM_THREADS": ""},  # whatever sarseg does
}


def environment(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in POLICIES[policy]}
    env.update({k: v for k, v in POLICIES[policy].items() if v})  # "" means: not set
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def start_demo(policy: str, folder: Path, steps: tuple[int, int]) -> subprocess.Popen:
    command = [sys.executable, "-m", "sarseg", "demo", "--out", str(folder), "--device", "cpu",
               "--pretrain-steps", str(steps[0]), "--finetune-steps", str(steps[1])]
    return subprocess.Popen(command, env=environment(policy), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def seconds_of(proc: subprocess.Popen, timeout: float) -> float | None:
    """The demo's own seconds, or None when it ran past ``timeout`` (then it is stopped)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    return json.loads(out)["seconds"] if proc.returncode == 0 else None


def measure(policy: str, load: str, steps: tuple[int, int], timeout: float) -> float | None:
    with tempfile.TemporaryDirectory(prefix="sarseg-threads-") as tmp:
        spinners = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(CORES if load == "busy" else 0)]
        try:
            demos = [start_demo(policy, Path(tmp) / f"demo{i}", steps) for i in range(2 if load == "twin" else 1)]
            times = [seconds_of(d, timeout) for d in demos]
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()
    return None if None in times else statistics.mean(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="measurements per policy and load (default: 3)")
    parser.add_argument("--policies", nargs="+", choices=list(POLICIES), default=["old", "passive", "spin10k", "sarseg"],
                        help="default: old passive spin10k sarseg")
    parser.add_argument("--loads", nargs="+", choices=("idle", "busy", "twin"), default=["idle", "busy", "twin"],
                        help="default: idle busy twin")
    parser.add_argument("--steps", nargs=2, type=int, default=(30, 60), metavar=("PRETRAIN", "FINETUNE"),
                        help="the demo's steps (default: 30 60)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a run counts as too slow (default: 300)")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    args = parser.parse_args()
    results: dict[tuple[str, str], list[float | None]] = {}
    loads: dict[str, list[float]] = {}
    for repeat in range(args.repeats):
        for load in args.loads:
            for policy in args.policies:
                loads.setdefault(load, []).append(os.getloadavg()[0])
                value = measure(policy, load, tuple(args.steps), args.timeout)
                results.setdefault((policy, load), []).append(value)
                print(f"[{time.strftime('%H:%M:%S')}] repeat {repeat + 1} {load:5} {policy:9} "
                      f"{'timeout' if value is None else f'{value:.1f} s'} (load {os.getloadavg()[0]:.1f})",
                      file=sys.stderr, flush=True)
    print(f"`sarseg demo --pretrain-steps {args.steps[0]} --finetune-steps {args.steps[1]}`, {CORES} cores, "
          f"median (min-max) demo seconds over {args.repeats} runs; timeouts ({args.timeout:.0f} s) count as slowest\n")
    print("| policy | " + " | ".join(f"{load} (load {statistics.median(loads[load]):.1f})" for load in args.loads) + " |")
    print("|---" * (len(args.loads) + 1) + "|")
    for policy in args.policies:
        cells = []
        for load in args.loads:
            values = sorted((v if v is not None else float("inf")) for v in results[(policy, load)])
            fmt = lambda v: "timeout" if v == float("inf") else f"{v:.1f}"  # noqa: E731
            cells.append(f"{fmt(statistics.median(values))} ({fmt(values[0])}-{fmt(values[-1])})")
        print(f"| {policy} ({POLICIES[policy].get('OMP_NUM_THREADS') or 'sarseg'} threads) | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps([{"policy": p, "load": l, "seconds": v} for (p, l), vs in results.items() for v in vs], indent=1))


if __name__ == "__main__":
    main()
