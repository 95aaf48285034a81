"""The paper's fine-tuning comparison (§4.2) on a pretrained SmolLM2-135M: LEGO k = 3, target skill 3 (issue 20).

Every run is `hf-skillit train recipes/lego_finetune_smollm2_lora.yaml` with the settings chosen by
`benchmarks/smollm2/speed.py` (LoRA r16, lr 5e-4, batch 8, bf16 autocast, one thread) and the learned graph
`recipes/graphs/lego_k3_smollm2.json`, in a fresh process, one run at a time. The validation loss of every skill
(1, 2 and 3: a target learned by a shortcut that breaks the other skills shows there) is read from the run's
trajectory: before training and at every round end (`--rounds` rounds of `--steps / --rounds` steps).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/smollm2/tables.py --seeds 0 1 2 3 4 --output-dir runs/smollm2_tables
    python benchmarks/smollm2/tables.py --seeds 0 1 2 3 4 --output-dir runs/smollm2_tables --report-only

Resumable: a finished run is `OUTPUT/runs/<method>_seed<s>.json` and is skipped; an unfinished one is trained again
from its start. Runs go seed by seed (every method of seed 0 first), so an interrupted table is complete over its
first seeds. `--eta` / `--window` change Skill-It's settings (tuning grids belong on seeds not reported: 100, 101).
The report (printed and written to `OUTPUT/summary.md`) gives, per skill (and, with `--setting pretrain`, for the
average over the skills, the paper's §4.1 metric), the steps to loss 0.3 and 0.1 (mean ± std over the runs that
reached it), the loss at fixed budgets, and per-seed paired differences against Skill-It (`--reference` another
method). Only the seeds every listed method has finished enter the report. Runs shared by two tables (skill-stratified
and random do not depend on the targets) are read from another output directory with `--also`:

    python benchmarks/smollm2/tables.py --setting pretrain --methods skill_it stratified random --eta 2 \
        --output-dir runs/smollm2_pretrain --also runs/smollm2_tables --report-only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "reproduction"))
from reproduce import LABELS, average, first_step, mean_std, point_at, steps_table  # noqa: E402

REPO = Path(__file__).resolve().parent.parent.parent
RECIPE = REPO / "recipes" / "lego_finetune_smollm2_lora.yaml"
GRAPH = REPO / "recipes" / "graphs" / "lego_k3_smollm2.json"
SKILLS = ["1", "2", "3"]
TARGET = "3"
# How each method is asked of the recipe (mixing and its settings).
METHODS = {
    "skill_it": ["training.mixing=skill_it"],
    "target_only": ["training.mixing=fixed", 'training.fixed_weights={"3": 1}'],
    "stratified": ["training.mixing=stratified"],
    "no_graph": ["training.mixing=no_graph"],
    "random": ["training.mixing=random"],
    "static": ["training.mixing=static"],
    "curriculum": ["training.mixing=curriculum"],
    "anticurriculum": ["training.mixing=anticurriculum"],
    "skill_curriculum": ["training.mixing=skill_curriculum"],
    "skill_anticurriculum": ["training.mixing=skill_anticurriculum"],
    "aioli": ["training.mixing=aioli"],  # issue 25: its aioli_* settings and eta through --extra
}
# fine-tuning (paper §4.2): learn skill 3; pre-training (§4.1): every skill is a target. Both on LoRA (the CPU
# setting chosen by speed.py); the paper pre-trains every weight, which costs 1.3-3x a LoRA step here.
TARGETS = {"finetune": '["3"]', "pretrain": '["1", "2", "3"]'}


def overrides(method: str, seed: int, args: argparse.Namespace, output_dir: Path) -> list[str]:
    """The `--set` list of one run: the chosen CPU settings, the learned graph, the method and the seed."""
    return [
        f"model.pretrained={args.model}",
        "data.generator.k=3",
        f"data.num_train_samples={args.train_samples}",
        "data.validation_per_skill=50",
        f"data.seed={seed}",
        f"training.max_steps={args.steps}",
        f"training.rounds={args.rounds}",
        f"training.eta={args.eta}",
        f"training.window={args.window}",
        "training.per_device_train_batch_size=8",
        "training.eval_samples_per_skill=50",
        f"training.bf16={str(args.bf16).lower()}",
        "training.use_cpu=true",
        f"training.seed={seed}",
        "training.save_steps=100000",
        "training.logging_steps=1000",
        "training.disable_tqdm=true",
        f"training.output_dir={output_dir}",
        "training.overwrite_output_dir=true",
        f"training.target_skills={TARGETS[args.setting]}",
        *METHODS[method],
        *args.extra,
        # "chain": the recipe's own graph, the LEGO reasoning chain built in code; otherwise a graph file.
        *([] if args.graph == "chain" else [f"graph.path={args.graph}", "graph.reasoning=null"]),
    ]


def curve_of(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """The per-skill losses before training and at every round end, and the mixture of every round (with the
    mixing law A a mixer estimated in that round, Aioli's, when there is one: the work folder is removed)."""
    from hf_skillit.rundir import load_trajectory

    rounds = load_trajectory(run_dir)
    curve = [{"step": 0, "loss": rounds[0]["initial_eval_loss"]}] if "initial_eval_loss" in rounds[0] else []
    curve += [{"step": r["global_step"], "loss": r["eval_loss"]} for r in rounds]
    return curve, [{"step": r["global_step"], "p": r["p"], **({"A": r["A"]} if r.get("A") else {})} for r in rounds]


def run_one(method: str, seed: int, args: argparse.Namespace, out: Path) -> None:
    result = out / "runs" / f"{method}_seed{seed}.json"
    if result.exists():
        return
    work = out / "work" / f"{method}_seed{seed}"
    command = [
        sys.executable,
        "-m",
        "hf_skillit.cli",
        "train",
        str(RECIPE),
        "--set",
        *overrides(method, seed, args, work),
    ]
    start = time.perf_counter()
    log = out / "logs" / f"{method}_seed{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise SystemExit(f"{method} seed {seed} failed (exit {done.returncode}); the end of {log}:\n{tail}")
    curve, weights = curve_of(work)
    record = {
        "method": method,
        "seed": seed,
        "curve": curve,
        "p": weights,
        "seconds": round(time.perf_counter() - start, 1),
        "load": os.getloadavg()[0],
        "command": "hf-skillit train " + " ".join([str(RECIPE.relative_to(REPO)), "--set", *command[6:]]),
    }
    result.parent.mkdir(parents=True, exist_ok=True)
    tmp = result.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(result)  # atomic: a run is either finished or absent
    shutil.rmtree(work, ignore_errors=True)  # the adapter is not needed, the curve is in the result
    print(f"{method} seed {seed}: {record['seconds']} s, final loss {curve[-1]['loss']}", flush=True)


def load_results(out: Path, methods: list[str], seeds: list[int], also: list[Path] = ()) -> dict[str, list[dict]]:
    """Finished runs of the seeds that every method has finished, from `out` and the output directories `also`
    (a run of `out` wins over one of the same method and seed elsewhere)."""
    runs = {m: {} for m in methods}
    for path in [p for d in reversed([out, *also]) for p in sorted((Path(d) / "runs").glob("*.json"))]:
        record = json.loads(path.read_text())
        if record["method"] in runs and record["seed"] in seeds:
            runs[record["method"]][record["seed"]] = record
    complete = [s for s in seeds if all(s in runs[m] for m in methods)]
    return {m: [runs[m][s] for s in complete] for m in methods}


def loss_at(curve: list[dict], step: int, skill: str | None) -> float:
    """The loss on `skill` (None: the average over SKILLS, the pre-training objective) at the last point <= step."""
    losses = point_at(curve, step)["loss"]
    return average(losses, SKILLS) if skill is None else losses[skill]


def column_name(skill: str | None) -> str:
    return "average" if skill is None else f"skill {skill}"


def loss_table(results: dict[str, list[dict]], budgets: list[int], columns: list[str | None] = SKILLS) -> str:
    header = ["Method", *(f"{column_name(s)} @ {b}" for b in budgets for s in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, runs in results.items():
        cells = [mean_std([loss_at(r["curve"], b, s) for r in runs]) for b in budgets for s in columns]
        lines.append("| " + " | ".join([LABELS[method], *cells]) + " |")
    return "\n".join(lines)


def paired_table(
    results: dict[str, list[dict]],
    thresholds: list[float],
    budget: int,
    columns: list[str | None] = SKILLS,
    reference: str = "skill_it",
) -> str:
    """Per other method: the `reference` method's steps to each threshold minus the method's, and its loss at
    `budget` minus the method's, mean ± std over seeds (paired: same data, same initial model), one column per
    entry of `columns` (a skill, or None for the average over SKILLS). A run that never reached a threshold counts
    as `budget` steps (the difference is then a bound)."""
    if reference not in results:
        return ""
    ours = {r["seed"]: r for r in results[reference]}
    header = [f"{LABELS[reference]} minus", *(f"steps to {t}, {column_name(s)}" for t in thresholds for s in columns)]
    header += [f"loss @ {budget}, {column_name(s)}" for s in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, runs in results.items():
        if method == reference:
            continue
        cells = []
        for threshold in thresholds:
            for skill in columns:
                diffs = []
                for r in runs:
                    a = first_step(ours[r["seed"]]["curve"], skill, threshold, SKILLS)
                    b = first_step(r["curve"], skill, threshold, SKILLS)
                    diffs.append(float((budget if a is None else a) - (budget if b is None else b)))
                cells.append(f"{mean_std(diffs, digits=0)} ({sum(d < 0 for d in diffs)}/{len(diffs)} sooner)")
        for skill in columns:
            diffs = [
                loss_at(ours[r["seed"]]["curve"], budget, skill) - loss_at(r["curve"], budget, skill) for r in runs
            ]
            cells.append(f"{mean_std(diffs)} ({sum(d < 0 for d in diffs)}/{len(diffs)} lower)")
        lines.append("| " + " | ".join([LABELS[method], *cells]) + " |")
    return "\n".join(lines)


def report(out: Path, methods: list[str], seeds: list[int], args: argparse.Namespace) -> str:
    results = load_results(out, methods, seeds, [Path(d) for d in args.also])
    n = len(next(iter(results.values())))
    if n == 0:
        return f"no seed of {seeds} has finished every method of {methods} yet"
    done = [r["seed"] for r in results[methods[0]]]
    parts = [f"Seeds {done} ({n} of {len(seeds)}{', PARTIAL' if n < len(seeds) else ''}); methods {methods}."]
    # Pre-training has every skill as a target: the average over the skills (the paper's §4.1 metric) is a column.
    columns: list[str | None] = [*SKILLS, None] if args.setting == "pretrain" else list(SKILLS)
    for threshold in (0.3, 0.1):
        parts += [f"\nSteps to loss ≤ {threshold}:\n", steps_table(results, columns, threshold, args.steps)]
    budgets = sorted({args.steps // 3, 2 * args.steps // 3, args.steps})
    parts += ["\nLoss at fixed budgets:\n", loss_table(results, budgets, columns)]
    parts += ["\nPaired by seed:\n", paired_table(results, [0.3, 0.1], args.steps, columns, args.reference)]
    seconds = [r["seconds"] for runs in results.values() for r in runs]
    parts.append(f"\nWall time per run: {mean_std(seconds, digits=0)} s.")
    text = "\n".join(parts)
    (out / "summary.md").write_text(text + "\n")
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=["skill_it", "target_only", "stratified"])
    p.add_argument("--steps", type=int, default=240)
    p.add_argument("--rounds", type=int, default=12, help="Skill-It rounds T; also the evaluation grid")
    p.add_argument("--eta", type=float, default=0.5)
    p.add_argument("--window", type=int, default=3)
    p.add_argument("--train-samples", type=int, default=15000, help="LEGO rows, a third per skill")
    p.add_argument("--graph", default=str(GRAPH), help="a graph JSON, or 'chain' for the recipe's built-in chain")
    p.add_argument("--model", default="smollm2-135m", help="model.pretrained: a known name, a .gguf or a folder")
    p.add_argument("--bf16", type=lambda s: s.lower() in ("1", "true", "yes"), default=True)
    p.add_argument("--output-dir", default="runs/smollm2_tables")
    p.add_argument("--setting", choices=list(TARGETS), default="finetune", help="target skill 3, or all skills")
    p.add_argument("--extra", nargs="*", default=[], help="more --set overrides for every run (a grid's cell)")
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--also", nargs="*", default=[], help="more output directories whose runs the report reads (shared baselines)"
    )
    p.add_argument(
        "--reference", default="skill_it", choices=list(METHODS), help="the method the paired table subtracts from"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.output_dir).resolve()
    if args.graph != "chain" and not Path(args.graph).is_file():  # before any run starts
        raise SystemExit(
            f"graph file {args.graph!r} not found: learn it first (benchmarks/RESULTS.md, Issue 20) or pass --graph chain"
        )
    if not args.report_only:
        for seed in args.seeds:
            for method in args.methods:
                run_one(method, seed, args, out)
    print(report(out, args.methods, args.seeds, args))


if __name__ == "__main__":
    main()
