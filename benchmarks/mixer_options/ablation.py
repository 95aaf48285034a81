"""Tables of the issue-23 ablations: Skill-It's paper rule against loss normalisation, smoothing, both, and the
baselines, on the table fold (runs of `benchmarks/reproduction/reproduce.py`, one output directory per arm) and on
the text out-of-domain demo (`benchmarks/out_of_domain/text_ood_demo.py --variant ...`, one results.json).

    python benchmarks/mixer_options/ablation.py --fold ARM=DIR[:METHOD] [ARM=DIR[:METHOD] ...] --reference paper_eta2
    python benchmarks/mixer_options/ablation.py --text results.json --reference online_paper_eta2

Fold: per arm, over the seeds it has: steps until the average validation loss over skills first reaches
`--threshold` (mean ± sample std over the seeds that reached it, and how many did), the average loss at the last
step, skill 1's loss at the last step and its largest rise above its running minimum after step 400 (forgetting),
and the smallest weight any skill had in any round (starvation); then, paired by seed, each arm minus the
reference arm. Text: per arm, each lm-eval task's NLL after training and their mean, the largest weight of any
source in any round (collapse), and the paired differences.
Only seeds every compared arm has enter a paired row. `DIR:METHOD` takes one method's runs from a directory holding
several (issue 25: `reproduce.py --methods aioli,skill_it,stratified,random` into one directory).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _ms(values: list[float], fmt: str = ".3f") -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return f"{np.mean(values):{fmt}} ± {np.std(values, ddof=1):{fmt.lstrip('+')}}"


def fold_metrics(run: dict, threshold: float) -> dict[str, float]:
    curve = run["curve"]
    average = [np.mean(list(point["loss"].values())) for point in curve]
    hit = next((point["step"] for point, a in zip(curve, average, strict=True) if a <= threshold), None)
    skill1 = [point["loss"]["1"] for point in curve]
    late = [i for i, point in enumerate(curve) if point["step"] >= 400]
    rise = max(skill1[i] - min(skill1[: i + 1]) for i in late) if late else float("nan")
    min_weight = min(min(record["p"].values()) for record in run["trajectory"])
    return {
        "steps": hit,
        "final": average[-1],
        "skill1_final": skill1[-1],
        "skill1_rise": rise,
        "min_weight": min_weight,
    }


def fold_tables(arms: dict[str, str], reference: str, threshold: float, seeds: set[int] | None = None) -> str:
    metrics = {}
    for arm, spec in arms.items():
        folder, _, method = spec.partition(":")
        metrics[arm] = {}
        for path in sorted((Path(folder) / "runs").glob(f"{method or '*'}_seed*.json")):
            run = json.loads(path.read_text())
            if seeds is None or run["seed"] in seeds:
                metrics[arm][run["seed"]] = fold_metrics(run, threshold)
    lines = [
        f"| arm | seeds | steps to average loss ≤ {threshold} (reached) | average loss at the end | skill 1 loss at the "
        "end | skill 1 largest rise after step 400 | smallest weight of any skill, any round |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, seeds in metrics.items():
        runs = list(seeds.values())
        steps = [r["steps"] for r in runs if r["steps"] is not None]
        lines.append(
            f"| {arm} | {','.join(map(str, seeds))} | {_ms(steps, '.0f')} ({len(steps)}/{len(runs)}) | "
            f"{_ms([r['final'] for r in runs])} | {_ms([r['skill1_final'] for r in runs])} | "
            f"{_ms([r['skill1_rise'] for r in runs])} | {_ms([r['min_weight'] for r in runs])} |"
        )
    if reference in metrics:
        lines += [
            "",
            f"Paired by seed, arm minus {reference} (steps: a seed that never reached the threshold counts "
            f"{threshold} as reached at the last step, marked *):",
            "",
            "| arm | seeds | steps | average loss at the end | skill 1 loss at the end | arm lower on |",
            "|---|---|---|---|---|---|",
        ]
        ref = metrics[reference]
        for arm, seeds in metrics.items():
            if arm == reference:
                continue
            common = sorted(set(seeds) & set(ref))
            if not common:
                continue
            last = 1200
            bound = any(seeds[s]["steps"] is None or ref[s]["steps"] is None for s in common)
            steps = [(seeds[s]["steps"] or last) - (ref[s]["steps"] or last) for s in common]
            final = [seeds[s]["final"] - ref[s]["final"] for s in common]
            skill1 = [seeds[s]["skill1_final"] - ref[s]["skill1_final"] for s in common]
            lower = sum(d < 0 for d in final)
            lines.append(
                f"| {arm} | {','.join(map(str, common))} | {_ms(steps, '+.0f')}{'*' if bound else ''} | "
                f"{_ms(final, '+.3f')} | {_ms(skill1, '+.3f')} | {lower}/{len(common)} seeds (average loss) |"
            )
    return "\n".join(lines)


def text_tables(path: Path, reference: str, seeds: set[int] | None = None) -> str:
    runs = json.loads(path.read_text())["runs"]
    arms: dict[str, dict[int, dict]] = {}
    for name, record in runs.items():
        arm, _, seed = name.rpartition("_seed")
        if seeds is None or int(seed) in seeds:
            arms.setdefault(arm, {})[int(seed)] = record
    tasks = sorted({k.rsplit("/", 1)[0] for r in runs.values() for k in r["lm_eval_after"] if k.endswith("/nll")})

    def nlls(record: dict) -> list[float]:
        values = [record["lm_eval_after"][f"{t}/nll"] for t in tasks]
        return [*values, float(np.mean(values))]

    header = [*(f"{t} NLL" for t in tasks), "mean task NLL"]
    lines = [
        "| arm | seeds | " + " | ".join(header) + " | largest weight, any round |",
        "|---" * (len(header) + 3) + "|",
    ]
    for arm, seeds in arms.items():
        values = np.array([nlls(r) for r in seeds.values()])
        weights = [max(max(p.values()) for p in r.get("p_rounds", [r["p"]])) for r in seeds.values()]
        cells = [_ms(list(values[:, i]), ".4f") for i in range(values.shape[1])]
        lines.append(f"| {arm} | {','.join(map(str, seeds))} | " + " | ".join(cells) + f" | {_ms(weights, '.3f')} |")
    if reference in arms:
        lines += ["", f"Paired by seed, arm minus {reference}:", ""]
        lines += [
            "| arm | seeds | " + " | ".join(header) + " | arm lower on the mean |",
            "|---" * (len(header) + 3) + "|",
        ]
        ref = arms[reference]
        for arm, seeds in arms.items():
            common = sorted(set(seeds) & set(ref))
            if arm == reference or not common:
                continue
            diffs = np.array([np.subtract(nlls(seeds[s]), nlls(ref[s])) for s in common])
            cells = [_ms(list(diffs[:, i]), "+.4f") for i in range(diffs.shape[1])]
            lower = int((diffs[:, -1] < 0).sum())
            lines.append(
                f"| {arm} | {','.join(map(str, common))} | " + " | ".join(cells) + f" | {lower}/{len(common)} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fold", nargs="+", default=[], metavar="ARM=DIR")
    parser.add_argument("--text", help="results.json of text_ood_demo.py")
    parser.add_argument("--reference", default=None, help="the arm the paired rows subtract")
    parser.add_argument("--threshold", type=float, default=0.13)
    parser.add_argument("--seeds", help="comma-separated seeds to keep (default: every seed saved)")
    args = parser.parse_args()
    seeds = {int(s) for s in args.seeds.split(",")} if args.seeds else None
    if args.fold:
        arms = {spec.partition("=")[0]: spec.partition("=")[2] for spec in args.fold}
        print(fold_tables(arms, args.reference or next(iter(arms)), args.threshold, seeds))
    if args.text:
        print(text_tables(Path(args.text), args.reference or "online_paper_eta2", seeds))


if __name__ == "__main__":
    main()
