"""Issue 25's extra tables for the table-fold comparison (runs of `benchmarks/reproduction/reproduce.py` with
`--methods aioli,skill_it,stratified,random` in one output directory): per seed, every method's average validation
loss at the last step and Aioli's paired differences; the mean over the last `--tail` evaluations (a less noisy
reading, chosen after the runs: say so where it is quoted); the range of Aioli's p; and the mixing law A it
estimated, averaged over seeds, in round 1 and in the last round (rows: training skills, columns: validation).

    python benchmarks/aioli/fold_report.py runs/issue25/fold
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

METHODS = ("aioli", "skill_it", "stratified", "random")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--tail", type=int, default=5, help="evaluations averaged at the end")
    args = parser.parse_args()
    runs = {m: {} for m in METHODS}
    for m in METHODS:
        for path in sorted((args.folder / "runs").glob(f"{m}_seed*.json")):
            run = json.loads(path.read_text())
            runs[m][run["seed"]] = run
    seeds = sorted(set.intersection(*(set(r) for r in runs.values())))
    skills = sorted(runs["aioli"][seeds[0]]["curve"][-1]["loss"])

    def average(point: dict) -> float:
        return float(np.mean([point["loss"][s] for s in skills]))

    final = {m: {s: average(runs[m][s]["curve"][-1]) for s in seeds} for m in METHODS}
    tail = {m: {s: np.mean([average(p) for p in runs[m][s]["curve"][-args.tail :]]) for s in seeds} for m in METHODS}
    print("| seed | " + " | ".join(METHODS) + " | " + " | ".join(f"aioli - {m}" for m in METHODS[1:]) + " |")
    print("|---" * (2 * len(METHODS)) + "|")
    for s in seeds:
        cells = [f"{final[m][s]:.3f}" for m in METHODS] + [
            f"{final['aioli'][s] - final[m][s]:+.3f}" for m in METHODS[1:]
        ]
        print(f"| {s} | " + " | ".join(cells) + " |")
    print(f"\nMean average loss over the last {args.tail} evaluations (chosen after the runs):\n")
    print("| method | mean ± std | aioli minus it, paired | seeds aioli lower |\n|---|---|---|---|")
    for m in METHODS:
        values = [tail[m][s] for s in seeds]
        diffs = [tail["aioli"][s] - tail[m][s] for s in seeds]
        paired = "" if m == "aioli" else f"{np.mean(diffs):+.3f} ± {np.std(diffs, ddof=1):.3f}"
        lower = "" if m == "aioli" else f"{sum(d < 0 for d in diffs)}/{len(seeds)}"
        print(f"| {m} | {np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} | {paired} | {lower} |")
    weights = [w for s in seeds for r in runs["aioli"][s]["trajectory"] for w in r["p"].values()]
    print(f"\nAioli's p over every round and seed: min {min(weights):.3f}, max {max(weights):.3f}")
    for label, index in (("round 1", 0), ("last round", -1)):
        laws = [runs["aioli"][s]["trajectory"][index]["A"] for s in seeds]
        mean = np.mean([[[law[t][e] for e in skills] for t in skills] for law in laws], axis=0)
        print(f"\nA, {label}, mean over seeds (rows: training skills {skills}; columns: validation skills):")
        print("\n".join("    " + "  ".join(f"{v:+.3f}" for v in row) for row in mean))


if __name__ == "__main__":
    main()
