"""Skill-It's eta x window grid on the table fold (issue 11), on tuning seeds that the reported tables do not use.

Runs `benchmarks/reproduce.py --methods skill_it` once per (eta, window) on `--seeds` (default 100), two processes
at a time, then prints one table: per setting, the steps until the average validation loss over skills first
reaches `--threshold` and the average loss at the last step (mean over the tuning seeds), beside skill-stratified
sampling on the same seeds. Reruns skip the runs already saved (reproduce.py resumes).

    OMP_NUM_THREADS=1 python benchmarks/fold_grid.py --seeds 100 --output-dir runs/fold_grid
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ETAS = (0.25, 0.5, 1.0, 2.0, 4.0)
WINDOWS = (1, 3)
# The comparison's settings (benchmarks/RESULTS.md, issue 11); reproduce.py takes them unchanged.
COMMON = (
    "--task fold --setting pretrain --k 3 --digits 5 --base 4 --family gpt2 --steps 1200 --eval-every 40 "
    "--threshold 0.13"
).split()


def first_step(curve: list[dict], threshold: float) -> int | None:
    return next((p["step"] for p in curve if np.mean(list(p["loss"].values())) <= threshold), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="100", help="comma-separated tuning seeds")
    p.add_argument("--output-dir", default="runs/fold_grid")
    p.add_argument("--threshold", type=float, default=0.13)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    out = Path(args.output_dir)
    script = str(Path(__file__).with_name("reproduce.py"))
    jobs = [("stratified", ["--methods", "stratified"])] + [
        (f"eta{eta}_w{w}", ["--methods", "skill_it", "--eta", str(eta), "--window", str(w)])
        for eta in ETAS
        for w in WINDOWS
    ]
    if not args.report_only:
        running: list[subprocess.Popen] = []
        for name, extra in jobs:
            while len([r for r in running if r.poll() is None]) >= args.parallel:
                time.sleep(2)
            out.mkdir(parents=True, exist_ok=True)
            log = open(out / f"{name}.log", "w")  # noqa: SIM115 (closed when the process exits)
            cmd = [sys.executable, script, *COMMON, "--seed-list", args.seeds, "--output-dir", str(out / name), *extra]
            running.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        for r in running:
            r.wait()
    lines = [
        f"| setting | steps to average loss ≤ {args.threshold} | average loss at the last step | runs |",
        "|---|---|---|---|",
    ]
    for name, _ in jobs:
        runs = [json.loads(f.read_text()) for f in sorted((out / name / "runs").glob("*_seed*.json"))]
        if not runs:
            continue
        hits = [first_step(r["curve"], args.threshold) for r in runs]
        reached = [h for h in hits if h is not None]
        final = [np.mean(list(r["curve"][-1]["loss"].values())) for r in runs]
        steps = f"{np.mean(reached):.0f}" if reached else "-"
        lines.append(f"| {name} | {steps} ({len(reached)}/{len(runs)} reached) | {np.mean(final):.3f} | {len(runs)} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
