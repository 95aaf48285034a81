"""The GPU comparison's outputs: `results.json`, the tables of `results.md` (mean ± std over seeds at the last step
every run reached) and the curves. Tables: `lego` and `addition` (continual pre-training, every skill a target) and
`finetune` (LoRA fine-tuning on the LEGO target skill, in the format of the CPU tables of
`benchmarks/smollm2/tables.py`: steps to each threshold and the loss, per skill, the target and the others)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from benchmarks.gpu import settings
from benchmarks.gpu.settings import LR, TASKS

# table -> its skills (fine-tuning trains and validates on LEGO's five; its target is one of them)
TABLES = {
    "lego": TASKS["lego"]["skills"],
    "addition": TASKS["addition"]["skills"],
    "finetune": TASKS["lego"]["skills"],
}


def _summary(runs: list[dict[str, Any]], table_name: str) -> tuple[int | None, dict[str, dict[str, Any]]]:
    """Per method (and setting): loss and accuracy per skill at the last step every paper-setting run of the table
    reached (a run that stopped earlier is shown at its own last step, which its row names), mean and sample std
    over seeds."""
    done = [r for r in runs if r.get("ok") and r["table"] == table_name and r["curve"]]
    if not done:
        return None, {}
    paper = [r for r in done if r["setting"] == "paper"] or done
    common = min(r["curve"][-1]["step"] for r in paper)
    table: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(r["method"] for r in done):
        mine = [r for r in done if r["method"] == method]
        points = [max((p for p in r["curve"] if p["step"] <= common), key=lambda p: p["step"]) for r in mine]
        row: dict[str, Any] = {
            "setting": mine[0]["setting"],
            "seeds": [r["seed"] for r in mine],
            "step": min(p["step"] for p in points),
            "rounds_done": min(len(r["trajectory"]) for r in mine),
        }
        for metric in ("loss", "accuracy"):
            row[metric] = {skill: _mean_std([p[metric][skill] for p in points]) for skill in TABLES[table_name]}
            row[f"mean_{metric}"] = _mean_std([statistics.fmean(p[metric].values()) for p in points])
        table[method] = row
    return common, table


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else float("nan")}


def _cell(value: dict[str, float], digits: int = 3) -> str:
    if math.isnan(value["std"]):
        return f"{value['mean']:.{digits}f}"
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"


def write_outputs(report: dict[str, Any], out: Path) -> None:
    runs = report.get("runs", [])
    for name in TABLES:
        step, table = _summary(runs, name)
        if table:
            planned = sorted({r["steps"] for r in runs if r.get("ok") and r["table"] == name})
            report.setdefault("summary", {})[name] = {"common_step": step, "steps": planned, "methods": table}
            _plot(runs, name, out / f"{name}_curves.png")
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "results.md").write_text(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Skill-It on {report.get('model', {}).get('name', '?')}: {report['device']}",
        "",
        f"Command: `{report['command']}`; wall time {report.get('wall_s', '?')} s of a {report['budget_s']:.0f} s "
        f"budget; versions {report['versions']}.",
        f"Model: {report.get('model', {}).get('source', 'not prepared')}.",
        "",
    ]
    timing = report.get("timing", {})
    if timing.get("ok"):
        lines += [
            "## SkillItTrainer against a plain Trainer (fixed uniform mixture, one process)",
            "",
            "| trainer | s/step | samples/s |",
            "|---|---|---|",
            f"| SkillItTrainer (LM head at the scored positions, its default) | {timing['skillit_trainer']['s_per_step']} "
            f"| {timing['skillit_trainer']['samples_per_s']} |",
            f"| SkillItTrainer, logits everywhere | {timing['skillit_trainer_all_logits']['s_per_step']} "
            f"| {timing['skillit_trainer_all_logits']['samples_per_s']} |",
            f"| transformers.Trainer | {timing['plain_trainer']['s_per_step']} | {timing['plain_trainer']['samples_per_s']} |",
            "",
            f"Overhead of SkillItTrainer's data path and rounds (same computation as Trainer): "
            f"{timing['skillit_overhead_pct']:+.1f}% per step; logits at the scored positions only: "
            f"{timing['scored_logits_speedup']}x faster steps ({timing['steps']} steps, first {timing['warmup']} not "
            f"timed, batch {timing['batch']}). One round-end evaluation (every skill's validation rows): "
            f"{timing['round_eval_s']} s.",
            f"Mixture stream (the trainer's DataLoader, collation included): {timing['stream_samples_per_s']} "
            f"samples/s = {timing['stream_over_training']}x the training rate above.",
            "",
        ]
    elif timing:
        lines += ["## Timing run FAILED", "", "```", timing.get("log_tail", "")[-2000:], "```", ""]
    for task, summary in report.get("summary", {}).items():
        if task == "finetune":
            lines += _finetune_markdown(report, summary)
            continue
        skills = TASKS[task]["skills"]
        spec = TASKS[task]
        lines += [
            f"## {task}: validation at step {summary['common_step']} (the last step every paper-setting run reached)",
            "",
            f"eta {spec['eta']}, T {spec['rounds']}, w {spec['window']}, batch {report['settings']['batch']}, "
            f"lr {LR}, {summary['steps']} steps planned; "
            "setting `paper`: window of w rounds, summed, chain graph (diagonal 1, i -> i+1 of 0.5); setting "
            "`code`: the reference code's (window of w evaluations every steps/120, its LEGO graph). Random draws from "
            f"the imbalanced pool {spec['random']}. Mean ± sample std over seeds.",
            "",
            "| method | setting | seeds | step | rounds done | "
            + " | ".join(f"acc {s}" for s in skills)
            + " | mean acc | "
            + " | ".join(f"loss {s}" for s in skills)
            + " | mean loss |",
            "|---|---|---|---|---|" + "---|" * (2 * len(skills) + 2),
        ]
        for method, row in summary["methods"].items():
            cells = [_cell(row["accuracy"][s], 2) for s in skills] + [_cell(row["mean_accuracy"], 3)]
            cells += [_cell(row["loss"][s], 3) for s in skills] + [_cell(row["mean_loss"], 3)]
            lines.append(
                f"| {method} | {row['setting']} | {len(row['seeds'])} | {row['step']} | {row['rounds_done']} | "
                + " | ".join(cells)
                + " |"
            )
        lines += ["", f"Curves: {task}_curves.png.", ""]
    if report.get("error"):
        lines += ["## The run stopped with an error", "", "```", report["error"][-3000:], "```", ""]
    failed = [r for r in report.get("runs", []) if not r.get("ok")]
    if failed:
        lines += ["## Failed runs", ""] + [f"- {r['name']}: rc {r['rc']}" for r in failed] + [""]
    fsdp = report.get("fsdp")
    if fsdp is not None:
        status = "passed" if fsdp.get("ok") and fsdp.get("losses_finite") else "FAILED"
        lines += [
            "## FSDP smoke check (accelerate, one process)",
            "",
            f"`{report.get('fsdp_command', '')}`: {status}; distributed type {fsdp.get('distributed_type', '?')}, "
            f"FSDP enabled in the trainer: {fsdp.get('fsdp_enabled', '?')}, "
            f"parameters sharded (DTensor): {fsdp.get('sharded_parameters', '?')}, rounds {fsdp.get('rounds', '?')}; "
            f"training rows of {fsdp.get('row_lengths', '?')} tokens (min, max). Round 0 (the evaluation before the "
            f"first step) saw the model as the later rounds did: {fsdp.get('round0_as_later_rounds', '?')}; every "
            f"evaluation forward: {fsdp.get('evaluation_forwards', '?')}.",
            "",
        ]
        if not fsdp.get("ok"):
            lines += ["```", fsdp.get("log_tail", "")[-2000:], "```", ""]
    return "\n".join(lines)


def _finetune_markdown(report: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """The fine-tuning table as the CPU tables print it (`benchmarks/smollm2/tables.py`): per skill, the steps to
    each threshold and the loss at the last step every run reached, mean ± sample std over seeds, Skill-It minus each
    method paired by seed; and the mixtures."""
    from benchmarks.smollm2.tables import LABELS, mean_std, paired_table, point_at, steps_table

    skills, common, ft = TABLES["finetune"], summary["common_step"], report["settings"]["finetune"]
    done = [r for r in report["runs"] if r.get("ok") and r["table"] == "finetune" and r["curve"]]
    # Every curve read up to the common step, so no method is credited with steps another did not get.
    results: dict[str, list[dict[str, Any]]] = {}
    for r in done:
        results.setdefault(r["method"], []).append({**r, "curve": [p for p in r["curve"] if p["step"] <= common]})
    seeds = sorted({r["seed"] for r in done})
    lora = ft["lora"]
    methods = "; ".join(
        f"{LABELS[m]}: " + ", ".join(f"{k} {v}" for k, v in fields.items()) for m, fields in ft["methods"].items()
    )
    lines = [
        f"## Fine-tuning on LEGO k = {len(skills)}, target skill {ft['target']} (LoRA)",
        "",
        f"LoRA r {lora['r']}, alpha {lora['lora_alpha']}, dropout {lora['lora_dropout']} on "
        f"{', '.join(lora['target_modules'])}; lr {ft['lr']}, batch {ft['batch']}, bf16 autocast where the GPU has "
        f"it; Skill-It eta {ft['eta']}, T {ft['rounds']}, w {ft['window']}; graph: {ft['graph']}; every method with "
        f"target_skills [{ft['target']}] ({methods}). {summary['steps']} steps planned (at most "
        f"{ft['max_steps']}); seeds {seeds}, mean ± sample std. Every skill is validated (the target and the others: "
        f"a target learned by a shortcut that breaks the others shows there). Read at step {common}, the last step "
        "every run reached.",
        "",
    ]
    for threshold in settings.THRESHOLDS:
        lines += [f"Steps to loss ≤ {threshold}:", "", steps_table(results, skills, threshold, common), ""]
    header = ["Method", *(f"skill {s} @ {common}" for s in skills)]
    lines += [f"Loss at step {common}:", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, mine in results.items():
        cells = [mean_std([point_at(r["curve"], common)["loss"][s] for r in mine]) for s in skills]
        lines.append("| " + " | ".join([LABELS[method], *cells]) + " |")
    lines += ["", f"Paired by seed (a run that never reached a threshold counts as step {common}: a bound):", ""]
    lines.append(paired_table(results, list(settings.THRESHOLDS), common, skills))
    lines += ["", "Mixture p (skills " + ", ".join(skills) + "), mean over seeds, first and last round:", ""]
    lines += ["| Method | first round | last round |", "|---|---|---|"]
    for method, mine in results.items():
        ends = [[statistics.fmean(r["trajectory"][i]["p"][s] for r in mine) for s in skills] for i in (0, -1)]
        lines.append(f"| {LABELS[method]} | " + " | ".join(" / ".join(f"{v:.2f}" for v in p) for p in ends) + " |")
    return [*lines, "", "Curves: finetune_curves.png.", ""]


def _plot(runs: list[dict[str, Any]], task: str, path: Path) -> None:
    from matplotlib.figure import Figure

    skills = TABLES[task]
    figure = Figure(figsize=(3.2 * len(skills), 5.6))
    axes = figure.subplots(2, len(skills), squeeze=False)
    done = [r for r in runs if r.get("ok") and r["table"] == task]
    for method in dict.fromkeys(r["method"] for r in done):
        mine = [r for r in done if r["method"] == method]
        for column, skill in enumerate(skills):
            for row, metric in enumerate(("loss", "accuracy")):
                for i, r in enumerate(mine):
                    steps = [p["step"] for p in r["curve"]]
                    values = [p[metric][skill] for p in r["curve"]]
                    axes[row][column].plot(
                        steps,
                        values,
                        color=f"C{list(dict.fromkeys(x['method'] for x in done)).index(method)}",
                        alpha=0.8,
                        label=method if i == 0 else None,
                    )
                axes[row][column].set_title(f"skill {skill}: {metric}", fontsize=9)
                axes[row][column].set_xlabel("step", fontsize=8)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
