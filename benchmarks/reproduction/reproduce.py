"""Reproduction benchmark: Skill-It against every baseline of the paper (§4.1, §4.2, Appendix D.3, D.5), tiny models.

    OMP_NUM_THREADS=1 python benchmarks/reproduction/reproduce.py --task lego --setting pretrain --seeds 3
    OMP_NUM_THREADS=1 python benchmarks/reproduction/reproduce.py --task addition --setting finetune --seeds 3
    OMP_NUM_THREADS=1 python benchmarks/reproduction/reproduce.py --task lego --setting pretrain --quick   # 2-3 min smoke run
    OMP_NUM_THREADS=1 python benchmarks/reproduction/reproduce.py --task fold --setting finetune --seeds 5   # issue 11's suite

The table fold (`--task fold`, `hf_skillit.synthetic.fold`, issue 11) is the suite a tiny model learns on a CPU:
`--k` skills over `--digits` symbols in `--base`, and the tables also give the steps until each
skill's loss and the average loss first reach `--threshold`, paired by seed against skill-stratified sampling.
`--eta`/`--window` override the setting's Skill-It parameters (the grid of RESULTS.md), `--seed-list` runs other
seeds than 0..seeds-1 (the grid's tuning seeds).

Continual pre-training (`pretrain`, Tables 4-6, Figures 4, 19-21, 26-29): random sampling from an imbalanced pool
(LEGO: the tail of 1:1:1:3:5, addition 13:14:18), sample-level curriculum and anticurriculum over that pool
(scored by the initial model, pacing g(i) = iN/M), skill-stratified sampling, skill-curriculum and
skill-anticurriculum (Varshney et al., frac = 0.4), Skill-It, and the ablations no-graph and static (T = 1).
Fine-tuning (`finetune`, §4.2, Figure 5): LEGO target skill 3 from skills 1-3, addition target skill 1 from
skills 1-2; target-only, skill-stratified, Skill-It, no-graph and static; steps until the target's validation
loss first reaches `--threshold`.

Every method of a seed shares that seed's data and initial weights. Each run's per-skill validation loss and
greedy accuracy are recorded every `--eval-every` steps (round ends included) into
`OUTPUT/runs/<method>_seed<s>.json`; a rerun skips the runs already there, and `--report-only` only redraws. A run
whose per-round sample counts do not follow its mixture is refused. Tables (mean ± sample std over seeds,
markdown, printed and written to `OUTPUT/summary.md`) and PNGs are made from those files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from matplotlib.figure import Figure
from transformers import PrinterCallback
from transformers.utils import logging as hf_logging

from hf_skillit import LMCollator, SkillItConfig, SkillItTrainer, SkillSet, SkillsGraph
from hf_skillit.curriculum import curriculum_setup, skill_curriculum_setup
from hf_skillit.recipes import lego_reasoning_graph
from hf_skillit.synthetic import (
    CurveRecorder,
    build_tokenizer,
    encode,
    make_addition,
    make_fold,
    make_lego,
    make_tiny_model,
    tiny_model_config,
)

REPO = Path(__file__).resolve().parents[2]
PRETRAIN_METHODS = (
    "random",
    "curriculum",
    "anticurriculum",
    "stratified",
    "skill_curriculum",
    "skill_anticurriculum",
    "skill_it",
    "no_graph",
    "static",
    "aioli",
)
FINETUNE_METHODS = ("target_only", "stratified", "skill_it", "no_graph", "static")
AIOLI_FLAGS = ("aioli_eta", "aioli_probe_steps", "aioli_sweeps", "aioli_one_hot_factor", "aioli_ema")
LABELS = {
    "random": "Random",
    "curriculum": "Curriculum",
    "anticurriculum": "Anticurriculum",
    "stratified": "Skill-stratified",
    "skill_curriculum": "Skill-curriculum",
    "skill_anticurriculum": "Skill-anticurriculum",
    "skill_it": "Skill-It",
    "no_graph": "No graph (ablation)",
    "static": "Static, T=1 (ablation)",
    "target_only": "Target skill only",
    "aioli": "Aioli",
}
# The paper's averages over skills (GPT-Neo 125M, LEGO k = 5, 6000 steps, 5 seeds): Tables 4, 5 and 6.
PAPER = {
    ("lego", "loss"): {
        "random": "0.541 ± 0.031",
        "curriculum": "0.535 ± 0.029",
        "anticurriculum": "0.554 ± 0.001",
        "stratified": "0.046 ± 0.022",
        "skill_curriculum": "0.514 ± 0.040",
        "skill_anticurriculum": "0.286 ± 0.060",
        "skill_it": "0.012 ± 0.008",
    },
    ("lego", "accuracy"): {
        "random": "62.9 ± 3.5",
        "curriculum": "63.6 ± 3.6",
        "anticurriculum": "61.3 ± 2.2",
        "stratified": "98.5 ± 0.9",
        "skill_curriculum": "66.6 ± 7.7",
        "skill_anticurriculum": "82.8 ± 4.9",
        "skill_it": "99.4 ± 0.2",
    },
    ("addition", "loss"): {
        "random": "0.011 ± 0.014",
        "curriculum": "0.009 ± 0.010",
        "anticurriculum": "0.009 ± 0.014",
        "stratified": "0.012 ± 0.016",
        "skill_curriculum": "0.015 ± 0.010",
        "skill_anticurriculum": "0.395 ± 0.371",
        "skill_it": "0.009 ± 0.011",
    },
}
# Paper §4.2: Skill-It reaches validation loss 0.01 on the target in this many percent fewer steps than target-only.
PAPER_FEWER_STEPS = {"lego": 38.1, "addition": 59.0}


@dataclass
class TaskSetup:
    """The paper's settings for one task and setting (Appendix C.3), scaled to the run's budget."""

    task: str
    setting: str
    num_skills: int  # LEGO variables k / addition digits
    train_skills: list[str]
    target: str | None
    eta: float
    rounds: int
    pacing_epochs: int  # M of the curriculum's pacing function
    random_proportions: list[float] = field(default_factory=list)
    base: int = 4  # fold only: symbols per position
    digits: int = 5  # fold only: symbols shown

    @property
    def all_skills(self) -> list[str]:
        return [str(i) for i in range(1, self.num_skills + 1)]


def task_setup(task: str, setting: str, num_skills: int) -> TaskSetup:
    if task == "fold":
        # No paper settings exist for the fold: the random pool keeps LEGO's tail (harder skills heavier), the
        # fine-tuning target is the deepest skill, trained with all shallower ones as possible prerequisites.
        skills = [str(i) for i in range(1, num_skills + 1)]
        proportions = [1.0, 1.0, 1.0, 3.0, 5.0][-num_skills:] if num_skills <= 5 else [1.0] * num_skills
        target = skills[-1] if setting == "finetune" else None
        return TaskSetup(task, setting, num_skills, skills, target, 1.0, 6, 5, proportions)
    if task == "lego":
        # The paper's imbalanced pool is 1:1:1:3:5 for k = 5; with fewer skills keep its tail (harder skills heavier).
        proportions = [1.0, 1.0, 1.0, 3.0, 5.0][-num_skills:] if num_skills <= 5 else [1.0] * num_skills
        if setting == "pretrain":
            return TaskSetup(
                task, setting, num_skills, [str(i) for i in range(1, num_skills + 1)], None, 0.5, 6, 5, proportions
            )
        return TaskSetup(task, setting, num_skills, ["1", "2", "3"], "3", 0.5, 10, 5, proportions)
    proportions = [13.0, 14.0, 18.0] if num_skills == 3 else [1.0] * num_skills
    if setting == "pretrain":
        return TaskSetup(
            task, setting, num_skills, [str(i) for i in range(1, num_skills + 1)], None, 0.1, 5, 3, proportions
        )
    return TaskSetup(task, setting, num_skills, ["1", "2"], "1", 0.1, 5, 3, proportions)


def default_graph(setup: TaskSetup) -> tuple[SkillsGraph, str]:
    """`recipes/graphs/<task>_k<k>.json` when the graph-learning work has shipped it, else the hand-made graph;
    restricted to the setting's training skills."""
    shipped = REPO / "recipes" / "graphs" / f"{setup.task}_k{setup.num_skills}.json"
    if shipped.is_file():
        graph, source = (
            SkillsGraph.load(shipped).reorder(setup.all_skills, setup.all_skills),
            str(shipped.relative_to(REPO)),
        )
    elif setup.task in ("lego", "fold"):
        graph = lego_reasoning_graph(setup.all_skills, "chain", 0.5)
        source = "reasoning chain (diagonal 1, i -> i+1 0.5)"
    else:
        # Paper Figure 11 (the reference script's --graph 1 0 0 1 1 0 0 0 1): skill 2 -> skill 1 and the diagonal;
        # the edge weight is the 0.5 of the paper's rule.
        matrix = np.eye(setup.num_skills)
        matrix[1, 0] = 0.5
        graph, source = (
            SkillsGraph(matrix, setup.all_skills),
            "addition graph of paper Figure 11 (diagonal 1, 2 -> 1 0.5)",
        )
    rows = [setup.all_skills.index(s) for s in setup.train_skills]
    return SkillsGraph(graph.matrix[np.ix_(rows, rows)], setup.train_skills, metadata=graph.metadata), source


# ----- data ---------------------------------------------------------------------------------------------------


@dataclass
class SeedData:
    balanced: SkillSet
    imbalanced: SkillSet
    validation: datasets.Dataset  # all evaluation skills, with a `skill` column, for accuracy


def generate(setup: TaskSetup, n: int, seed: int, proportions: list[float] | None) -> datasets.Dataset:
    if setup.task == "fold":
        return make_fold(
            n, base=setup.base, digits=setup.digits, num_skills=setup.num_skills, proportions=proportions, seed=seed
        )
    if setup.task == "lego":
        return make_lego(n, k=setup.num_skills, proportions=proportions, seed=seed)
    return make_addition(n, digits=setup.num_skills, proportions=proportions, seed=seed)


def build_data(setup: TaskSetup, tokenizer, pool_size: int, validation_per_skill: int, seed: int) -> SeedData:
    """A balanced and an imbalanced training pool of `pool_size` rows, and balanced validation rows that no pool holds."""
    # Distinct generator seeds per pool keep the pools' rows independent.
    validation = generate(setup, validation_per_skill * setup.num_skills, 1000 * seed + 1, None)
    held_out = set(validation["text"])

    def pool(generator_seed: int, proportions: list[float] | None) -> datasets.Dataset:
        rows = generate(setup, pool_size, generator_seed, proportions)
        return encode(rows.filter(lambda b: [t not in held_out for t in b["text"]], batched=True), tokenizer)

    validation = encode(validation, tokenizer)
    keep = set(setup.train_skills)
    validation = validation.filter(lambda b: [s in keep for s in b["skill"]], batched=True)

    def skillset(data: datasets.Dataset) -> SkillSet:
        data = data.filter(lambda b: [s in keep for s in b["skill"]], batched=True)
        return SkillSet.from_column(data, "skill", validation=validation, order=setup.train_skills)

    balanced = skillset(pool(1000 * seed + 2, None))
    imbalanced = skillset(pool(1000 * seed + 3, setup.random_proportions))
    return SeedData(balanced, imbalanced, validation)


# ----- one run ------------------------------------------------------------------------------------------------


def skill_curriculum_rounds(num_skills: int, frac: float = 0.4) -> int:
    """Rounds over which Varshney's phases (1 + i frac groups, then k) get exactly proportional lengths at frac 0.4."""
    return round(5 * (2 * num_skills + frac * num_skills * (num_skills - 1) / 2))


def run_method(
    method: str, seed: int, setup: TaskSetup, data: SeedData, graph: SkillsGraph, args: argparse.Namespace, tokenizer
) -> dict[str, Any]:
    """Train one method on one seed; returns its curve, Skill-It trajectory and wall time."""
    start = time.time()
    model = make_tiny_model(
        tiny_model_config(
            args.family,
            tokenizer=tokenizer,
            hidden_size=args.hidden,
            num_layers=args.layers,
            num_heads=args.heads,
            max_position_embeddings=64,
        ),
        seed=seed,
    ).to(args.device)
    collator = LMCollator(pad_token_id=tokenizer.pad_token_id)
    skills, rounds, extra, info = data.balanced, setup.rounds, {}, {}
    uses_graph = method in ("skill_it", "no_graph", "static")
    if method == "random":
        skills, mixing = data.imbalanced, "random"
    elif method in ("curriculum", "anticurriculum"):
        # The reference scores every sample of the imbalanced pool with the initial model.
        skills, schedule = curriculum_setup(
            data.imbalanced, model, collator, setup.pacing_epochs, anti=method == "anticurriculum", batch_size=256
        )
        mixing, rounds, extra = "fixed", setup.pacing_epochs, {"fixed_weights": schedule}
    elif method in ("skill_curriculum", "skill_anticurriculum"):
        rounds = skill_curriculum_rounds(len(setup.train_skills))
        order, schedule = skill_curriculum_setup(
            data.balanced, model, collator, rounds, anti=method == "skill_anticurriculum", batch_size=256
        )
        mixing, extra, info = "fixed", {"fixed_weights": schedule}, {"order": order}
    elif method == "target_only":
        mixing, extra = "fixed", {"fixed_weights": {setup.target: 1.0}}
    else:
        mixing = method  # stratified, skill_it, no_graph, static, aioli
    if method == "aioli":  # its own eta: A is normalised to sum 1, so eta moves p by at most exp(eta) a round
        extra.update({key: getattr(args, key) for key in AIOLI_FLAGS if key != "aioli_eta"})
    if setup.setting == "finetune":
        extra["target_skills"] = [setup.target]
    if method in ("skill_it", "no_graph"):
        extra.update(loss_normalization=args.loss_normalization, mixture_smoothing=args.mixture_smoothing)
    run_dir = Path(args.output_dir) / "work" / f"{method}_seed{seed}"
    config = SkillItConfig(
        output_dir=str(run_dir),
        overwrite_output_dir=True,
        mixing=mixing,
        rounds=rounds,
        eta=args.aioli_eta if method == "aioli" else setup.eta,
        window=args.window,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        per_device_eval_batch_size=256,
        learning_rate=args.lr,
        lr_scheduler_type=args.schedule,
        warmup_steps=args.warmup,
        weight_decay=0.01,
        adam_beta2=args.beta2,
        eval_samples_per_skill=args.validation_per_skill,
        # Loss-free mixers need no round-end evaluation: the recorder measures every method alike.
        evaluate_skills_every_round=False,
        seed=seed,
        data_seed=seed,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=args.device == "cpu",
        **extra,
    )
    recorder = CurveRecorder(args.eval_every, data.validation, tokenizer, batch_size=256)
    trainer = SkillItTrainer(
        model=model,
        args=config,
        skills=skills,
        graph=graph if uses_graph else None,
        processing_class=tokenizer,
        callbacks=[recorder],
    )
    trainer.remove_callback(PrinterCallback)
    recorder.trainer = trainer
    trainer.train()
    keep = ("round", "global_step", "p", "samples", "probes", "A")
    trajectory = [{k: r[k] for k in keep if k in r} for r in trainer.trajectory]
    shutil.rmtree(run_dir, ignore_errors=True)
    # Integrity: each phase's sample counts must follow its mixture (a round's main phase: the round's samples less
    # its probes'). A count more than 6 binomial standard errors from n p (or any count on a weight of 0 or 1) means
    # the stream did not do what the trajectory says.
    share_error = 0.0
    for record in trajectory:
        probes = record.get("probes", [])
        main = {s: c - sum(p["samples"][s] for p in probes) for s, c in record["samples"].items()}
        phases = [(main, record["p"], "")] + [(p["samples"], p["mixture"], f" probe {p['probe']}") for p in probes]
        for samples, weights, phase in phases:
            n = sum(samples.values())
            for skill, p in weights.items():
                deviation = abs(samples[skill] - n * p)
                share_error = max(share_error, deviation / n)
                if deviation > 6 * math.sqrt(n * p * (1 - p)) + 1e-6 * n:
                    raise RuntimeError(
                        f"{method} seed {seed}, round {record['round']}{phase}: {samples[skill]} of {n} samples "
                        f"from skill {skill}, whose weight was {p:.3f}"
                    )
    return {
        "method": method,
        "seed": seed,
        "curve": recorder.points,
        "trajectory": trajectory,
        "wall_s": round(time.time() - start, 1),
        "max_share_error": round(share_error, 4),
        **info,
    }


# ----- aggregation ----------------------------------------------------------------------------------------------


def mean_std(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    values = [v * scale for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def point_at(curve: list[dict[str, Any]], step: int) -> dict[str, Any]:
    """The last recorded point at or before `step`."""
    return [p for p in curve if p["step"] <= step][-1]


def average(values: dict[str, float], skills: list[str]) -> float:
    return float(np.mean([values[s] for s in skills]))


def steps_to_threshold(curve: list[dict[str, Any]], skill: str, threshold: float) -> int | None:
    return next((p["step"] for p in curve if p["loss"][skill] <= threshold), None)


def metric_table(
    results: dict[str, list[dict]], skills: list[str], metric: str, step: int, paper: dict[str, str] | None
) -> str:
    scale, digits = (100.0, 1) if metric == "accuracy" else (1.0, 3)
    header = ["Method", *(f"Skill {s}" for s in skills), "Average"] + (["Paper average"] if paper else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, runs in results.items():
        points = [point_at(r["curve"], step)[metric] for r in runs]
        cells = [mean_std([p[s] for p in points], scale, digits) for s in skills]
        cells.append(mean_std([average(p, skills) for p in points], scale, digits))
        if paper:
            cells.append(paper.get(method, "-"))
        lines.append("| " + " | ".join([LABELS[method], *cells]) + " |")
    return "\n".join(lines)


def checkpoint_table(results: dict[str, list[dict]], skills: list[str], steps: list[int]) -> str:
    header = ["Method", *(f"step {s}" for s in steps)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, runs in results.items():
        cells = [mean_std([average(point_at(r["curve"], s)["loss"], skills) for r in runs]) for s in steps]
        lines.append("| " + " | ".join([LABELS[method], *cells]) + " |")
    return "\n".join(lines)


def paired_differences(results: dict[str, list[dict]], skills: list[str], step: int) -> str:
    """Skill-It's average loss minus each other method's, paired by seed (same data and initial weights)."""
    if "skill_it" not in results:
        return ""
    by_seed = {
        method: {r["seed"]: average(point_at(r["curve"], step)["loss"], skills) for r in runs}
        for method, runs in results.items()
    }
    lines = ["| Skill-It minus | mean ± std over seeds | seeds where Skill-It is lower |", "|---|---|---|"]
    for method, losses in by_seed.items():
        if method == "skill_it":
            continue
        seeds = sorted(set(losses) & set(by_seed["skill_it"]))
        diffs = [by_seed["skill_it"][s] - losses[s] for s in seeds]
        lower = sum(d < 0 for d in diffs)
        lines.append(f"| {LABELS[method]} | {mean_std(diffs)} | {lower}/{len(seeds)} |")
    return "\n".join(lines)


def threshold_table(results: dict[str, list[dict]], target: str, threshold: float, task: str) -> str:
    lines = [
        f"| Method | steps to loss ≤ {threshold} on skill {target} | runs that reached it | final loss |",
        "|---|---|---|---|",
    ]
    reached: dict[str, list[int | None]] = {}
    for method, runs in results.items():
        reached[method] = [steps_to_threshold(r["curve"], target, threshold) for r in runs]
        hits = [s for s in reached[method] if s is not None]
        finals = [r["curve"][-1]["loss"][target] for r in runs]
        steps = mean_std([float(s) for s in hits], digits=0) if hits else "not reached"
        lines.append(f"| {LABELS[method]} | {steps} | {len(hits)}/{len(runs)} | {mean_std(finals)} |")
    if "skill_it" in reached and "target_only" in reached:
        pairs = [
            (a, b)
            for a, b in zip(reached["skill_it"], reached["target_only"], strict=True)
            if a is not None and b  # target-only at 0 steps: already there before training, no ratio
        ]
        if pairs:
            fewer = [100.0 * (b - a) / b for a, b in pairs]
            lines.append(
                f"\nSkill-It needs {mean_std(fewer, digits=1)} % fewer steps than target-only "
                f"(paired seeds where both reached it: {len(pairs)}"
                + (f"; paper: {PAPER_FEWER_STEPS[task]} % at loss 0.01)." if task in PAPER_FEWER_STEPS else ").")
            )
    return "\n".join(lines)


def first_step(curve: list[dict[str, Any]], skill: str | None, threshold: float, skills: list[str]) -> int | None:
    """First recorded step whose loss on `skill` (None: the average over `skills`) is at most `threshold`."""
    return next(
        (p["step"] for p in curve if (average(p["loss"], skills) if skill is None else p["loss"][skill]) <= threshold),
        None,
    )


def steps_table(results: dict[str, list[dict]], columns: list[str | None], threshold: float, budget: int) -> str:
    """Mean ± std of the steps to `threshold` over the runs that reached it, and how many did within `budget`."""
    skills = [c for c in columns if c is not None]
    header = ["Method", *(f"skill {c}" if c else "average" for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, runs in results.items():
        cells = []
        for column in columns:
            hits = [first_step(r["curve"], column, threshold, skills) for r in runs]
            reached = [float(h) for h in hits if h is not None]
            text = mean_std(reached, digits=0) if reached else "-"
            cells.append(f"{text} ({len(reached)}/{len(runs)})")
        lines.append("| " + " | ".join([LABELS[method], *cells]) + " |")
    return "\n".join(lines) + f"\n\n(reached/runs within {budget} steps; the mean is over the runs that reached it)"


def paired_steps(results: dict[str, list[dict]], columns: list[str | None], threshold: float, budget: int) -> str:
    """Per seed, Skill-It's steps to the threshold minus skill-stratified's, as a share of stratified's. A run that
    never reached it counts as `budget` steps, so a difference involving one is a bound, marked with `*`."""
    if "skill_it" not in results or "stratified" not in results:
        return ""
    skills = [c for c in columns if c is not None]
    ours = {r["seed"]: r for r in results["skill_it"]}
    theirs = {r["seed"]: r for r in results["stratified"]}
    seeds = sorted(set(ours) & set(theirs))
    header = ["", *(f"skill {c}" if c else "average" for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = {f"seed {s}": [] for s in seeds}
    shares: dict[str | None, list[float]] = {c: [] for c in columns}
    for column in columns:
        for seed in seeds:
            a = first_step(ours[seed]["curve"], column, threshold, skills)
            b = first_step(theirs[seed]["curve"], column, threshold, skills)
            censored = a is None or b is None
            a, b = a if a is not None else budget, b if b is not None else budget
            rows[f"seed {seed}"].append(f"{a - b:+d}{'*' if censored else ''}")
            if b:
                shares[column].append(100.0 * (a - b) / b)
    for name, cells in rows.items():
        lines.append("| " + " | ".join([name, *cells]) + " |")
    lines.append("| change (%) | " + " | ".join(mean_std(shares[c], digits=1) for c in columns) + " |")
    lines.append(
        "| seeds Skill-It sooner | "
        + " | ".join(f"{sum(v < 0 for v in shares[c])}/{len(shares[c])}" for c in columns)
        + " |"
    )
    return "\n".join(lines)


# ----- figures ------------------------------------------------------------------------------------------------


def mean_curve(runs: list[dict], metric: str, skill: str | None, skills: list[str]) -> tuple[list[int], np.ndarray]:
    steps = [p["step"] for p in runs[0]["curve"]]
    values = [
        [p[metric][skill] if skill else average(p[metric], skills) for p in r["curve"]]
        for r in runs
        if len(r["curve"]) == len(steps)
    ]
    return steps, np.mean(values, axis=0)


def plot_per_skill(results: dict[str, list[dict]], skills: list[str], metric: str, path: Path, title: str) -> Path:
    """Figures 4 and 19: one panel per skill plus the average, one line per method (mean over seeds)."""
    panels = [*skills, None]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    figure = Figure(figsize=(4.2 * cols, 3.2 * rows), dpi=100)
    for i, skill in enumerate(panels):
        axes = figure.add_subplot(rows, cols, i + 1)
        for method, runs in results.items():
            steps, values = mean_curve(runs, metric, skill, skills)
            axes.plot(steps, values, label=LABELS[method], linewidth=1.3)
        if metric == "loss":
            axes.set_yscale("log")
        axes.set_title(f"Skill {skill}" if skill else "Average per skill", fontsize=10)
        axes.set_xlabel("step")
        axes.set_ylabel("validation loss" if metric == "loss" else "accuracy")
    figure.axes[-1].legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_weights(runs: list[dict], path: Path, title: str) -> Path:
    """Figures 20-22: Skill-It's weight per skill over steps (mean over seeds), constant within a round."""
    figure = Figure(figsize=(6.5, 3.8), dpi=100)
    axes = figure.add_subplot()
    trajectory = runs[0]["trajectory"]
    edges = [0] + [r["global_step"] for r in trajectory]
    for skill in trajectory[0]["p"]:
        weights = np.mean([[r["p"][skill] for r in run["trajectory"]] for run in runs], axis=0)
        axes.stairs(weights, edges, baseline=None, label=f"Skill {skill}", linewidth=1.5)
    axes.set_xlabel("step")
    axes.set_ylabel("weight per skill")
    axes.set_ylim(bottom=0)
    axes.set_title(title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_target(results: dict[str, list[dict]], target: str, threshold: float, path: Path, title: str) -> Path:
    """Figure 5: the target skill's validation loss over steps per method (mean over seeds)."""
    figure = Figure(figsize=(6.5, 3.8), dpi=100)
    axes = figure.add_subplot()
    for method, runs in results.items():
        steps, values = mean_curve(runs, "loss", target, [target])
        axes.plot(steps, values, label=LABELS[method], linewidth=1.4)
    axes.axhline(threshold, color="grey", linestyle=":", linewidth=1, label=f"threshold {threshold}")
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel(f"validation loss, skill {target}")
    axes.set_title(title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    return path


# ----- main ---------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["lego", "addition", "fold"], default="lego")
    p.add_argument("--base", type=int, default=4, help="fold: symbols per position")
    p.add_argument("--digits", type=int, default=5, help="fold: symbols shown (at least --k + 1)")
    p.add_argument("--eta", type=float, default=None, help="default: the setting's (paper Appendix C.3; fold 1)")
    p.add_argument("--window", type=int, default=3)
    p.add_argument(
        "--loss-normalization", choices=["none", "initial"], default="none", help="Skill-It option (issue 23)"
    )
    # --smoothing: its name in the commands recorded in RESULTS.md, issue 23.
    p.add_argument(
        "--mixture-smoothing", "--smoothing", type=float, default=0.0, help="Skill-It mixture_smoothing c (issue 23)"
    )
    p.add_argument("--rounds", type=int, default=None, help="Skill-It rounds T; default: the setting's")
    # Aioli (issue 25, docs/aioli.md): the authors' code defaults; their eta has none (runs: 0.1-1).
    p.add_argument("--aioli-eta", type=float, default=0.5, help="Aioli's eta (its own scale: A sums to 1)")
    p.add_argument("--aioli-probe-steps", type=int, default=5)
    p.add_argument("--aioli-sweeps", type=int, default=1)
    p.add_argument("--aioli-one-hot-factor", type=float, default=1.0)
    p.add_argument("--aioli-ema", type=float, default=None)
    p.add_argument("--seed-list", default=None, help="comma-separated seeds instead of 0..seeds-1")
    p.add_argument("--setting", choices=["pretrain", "finetune"], default="pretrain")
    p.add_argument("--seeds", type=int, default=None, help="default 5 (--quick: 2)")
    p.add_argument("--methods", default=None, help="comma-separated subset of the setting's methods")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny model, few steps, 2 seeds, no claims")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--k", type=int, default=3, help="LEGO variables / addition digits (paper: 5 / 3)")
    p.add_argument(
        "--steps", type=int, default=None, help="a multiple of every method's rounds; default 1080 (--quick: 180)"
    )
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--family", choices=["gpt_neox", "llama", "gpt2"], default="gpt_neox")
    p.add_argument("--hidden", type=int, default=None, help="default 128 (--quick: 32)")
    p.add_argument("--layers", type=int, default=None, help="default 2 (--quick: 1)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--schedule", default="constant_with_warmup")
    p.add_argument("--warmup", type=int, default=None, help="default 100 (--quick: 10)")
    p.add_argument("--beta2", type=float, default=0.999)
    p.add_argument("--eval-every", type=int, default=None, help="default: steps / 30")
    p.add_argument("--validation-per-skill", type=int, default=100, help="paper: 100")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.6,
        help="fine-tuning target loss; default: the target loss recipes/graphs/lego_k3.json was learned at (paper: 0.01)",
    )
    p.add_argument("--report-only", action="store_true", help="no training: tables and figures of the saved runs")
    p.add_argument("--output-dir", default=None, help="default: runs/reproduce/<task>_<setting>[_quick]")
    args = p.parse_args()
    defaults = dict(seeds=2, steps=180, hidden=32, layers=1, warmup=10) if args.quick else {}
    defaults = {**dict(seeds=5, steps=1080, hidden=128, layers=2, warmup=100), **defaults}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.eval_every = args.eval_every or max(1, args.steps // 30)
    args.output_dir = args.output_dir or f"runs/reproduce/{args.task}_{args.setting}{'_quick' if args.quick else ''}"
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    setup = task_setup(args.task, args.setting, args.k)
    setup.base, setup.digits = args.base, args.digits
    if args.eta is not None:
        setup.eta = args.eta
    if args.rounds is not None:
        setup.rounds = args.rounds
    methods = PRETRAIN_METHODS if args.setting == "pretrain" else FINETUNE_METHODS
    if args.methods:
        unknown = [m for m in args.methods.split(",") if m not in methods]
        if unknown:
            raise SystemExit(f"unknown methods {unknown} for {args.setting}; choose from {', '.join(methods)}")
        methods = tuple(m for m in methods if m in args.methods.split(","))
    all_rounds = {setup.rounds}
    if {"curriculum", "anticurriculum"} & set(methods):
        all_rounds.add(setup.pacing_epochs)
    if {"skill_curriculum", "skill_anticurriculum"} & set(methods):
        all_rounds.add(skill_curriculum_rounds(len(setup.train_skills)))
    if any(args.steps % r for r in all_rounds):
        raise SystemExit(f"--steps {args.steps} must be a multiple of every method's rounds {sorted(all_rounds)}")
    graph, graph_source = default_graph(setup)
    tokenizer = build_tokenizer()
    out = Path(args.output_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    print(f"{args.task} {args.setting}: skills {setup.train_skills}, target {setup.target}, graph: {graph_source}")
    print(f"settings: {json.dumps({k: v for k, v in vars(args).items()})}", flush=True)

    started = time.time()
    results: dict[str, list[dict]] = {m: [] for m in methods}
    if args.report_only:
        for method in methods:
            for path in sorted((out / "runs").glob(f"{method}_seed*.json")):
                results[method].append(json.loads(path.read_text()))
        results = {m: runs for m, runs in results.items() if runs}
    seeds = [int(s) for s in args.seed_list.split(",")] if args.seed_list else list(range(args.seeds))
    for seed in [] if args.report_only else seeds:
        data = None
        for method in methods:
            path = out / "runs" / f"{method}_seed{seed}.json"
            if path.is_file():
                results[method].append(json.loads(path.read_text()))
                continue
            if data is None:
                data = build_data(setup, tokenizer, args.steps * args.batch, args.validation_per_skill, seed)
            result = run_method(method, seed, setup, data, graph, args, tokenizer)
            path.write_text(json.dumps(result))
            results[method].append(result)
            final = result["curve"][-1]
            print(
                f"seed {seed} {method:>20}: {result['wall_s']:6.1f} s, average loss "
                f"{average(final['loss'], setup.train_skills):.4f}, accuracy "
                f"{100 * average(final['accuracy'], setup.train_skills):.1f}",
                flush=True,
            )
    wall = time.time() - started

    skills = setup.train_skills
    steps = args.steps
    run_walls = [r["wall_s"] for runs in results.values() for r in runs]
    sections = [
        f"# {args.task} {args.setting}: {steps} steps of batch {args.batch}; seeds per method: "
        + ", ".join(f"{LABELS[m]} {len(runs)}" for m, runs in results.items()),
        f"graph: {graph_source}; model {args.family} hidden {args.hidden}, {args.layers} layers; lr {args.lr}; "
        f"Skill-It eta {setup.eta}, window {args.window}, {setup.rounds} rounds, loss normalization "
        f"{args.loss_normalization}, mixture_smoothing {args.mixture_smoothing}; "
        + (f"Aioli {', '.join(f'{k[6:]} {getattr(args, k)}' for k in AIOLI_FLAGS)}; " if "aioli" in results else "")
        + f"wall time {wall / 60:.1f} min this invocation, {sum(run_walls) / 60:.1f} min of training runs in all "
        f"({np.mean(run_walls):.0f} s per run)",
    ]
    if args.setting == "pretrain":
        paper_loss = PAPER.get((args.task, "loss"))
        paper_acc = PAPER.get((args.task, "accuracy"))
        sections += [
            f"## Validation loss per skill at step {steps} (paper Table {4 if args.task == 'lego' else 6})",
            metric_table(results, skills, "loss", steps, paper_loss),
            f"## Accuracy per skill (%) at step {steps} (paper Table 5)",
            metric_table(results, skills, "accuracy", steps, paper_acc if args.task == "lego" else None),
            f"## Accuracy per skill (%) halfway, step {steps // 2}",
            metric_table(results, skills, "accuracy", steps // 2, None),
            "## Average validation loss per skill at checkpoints",
            checkpoint_table(results, skills, [steps * q // 6 for q in range(1, 7)]),
            f"## Paired by seed, average loss at step {steps}",
            paired_differences(results, skills, steps),
            f"## Steps until the loss first reaches {args.threshold} (per skill; the average over skills)",
            steps_table(results, [*skills, None], args.threshold, steps),
            "## Paired by seed: Skill-It's steps to the threshold minus skill-stratified's",
            paired_steps(results, [*skills, None], args.threshold, steps),
        ]
    else:
        sections += [
            f"## Fine-tuning on skill {setup.target} (paper §4.2, Figure 5)",
            threshold_table(results, setup.target, args.threshold, args.task),
            "## Average validation loss of the target at checkpoints",
            checkpoint_table(results, [setup.target], [steps * q // 6 for q in range(1, 7)]),
            "## Paired by seed: Skill-It's steps to the threshold on the target minus skill-stratified's",
            paired_steps(results, [setup.target], args.threshold, steps),
        ]
    name = f"{args.task}_{args.setting}"
    figures = []
    if args.setting == "pretrain":
        figures.append(plot_per_skill(results, skills, "loss", out / f"{name}_loss.png", f"{args.task}: loss"))
        figures.append(plot_per_skill(results, skills, "accuracy", out / f"{name}_accuracy.png", f"{args.task}: acc"))
        ablation = {m: results[m] for m in ("skill_it", "no_graph", "static", "stratified") if m in results}
        figures.append(plot_per_skill(ablation, skills, "loss", out / f"{name}_ablation.png", "ablations"))
    else:
        figures.append(
            plot_target(results, setup.target, args.threshold, out / f"{name}_target.png", f"{args.task}: target")
        )
    if results.get("skill_it"):
        figures.append(plot_weights(results["skill_it"], out / f"{name}_skillit_weights.png", "Skill-It weights"))
    sections.append("Figures: " + ", ".join(str(f) for f in figures))
    report = "\n\n".join(sections)
    (out / "summary.md").write_text(report + "\n")
    print("\n" + report)


if __name__ == "__main__":
    main()
