"""Running a recipe and reporting: train, save the model, write the recipe, the summary and the plots into the run
directory (`hf_skillit.rundir` names the files), and print the per-skill table with what its numbers mean.

The summary explains itself:

- **Chance level** per skill, for synthetic tasks scored on the answer only: what a model that ignores its input
  scores. Its loss is the entropy of the answer tokens (per answer position, token-weighted like the validation
  loss: the best constant prediction), its accuracy the share of the most frequent answer. LEGO's answers are two
  values, balanced: chance is ln 2 = 0.693 and 50 %.
- **Which skills moved most**: each skill's loss before training (or, for runs without that measurement, after the
  first round) against its final loss.
- **A comparison line** against reference runs saved with the recipe (`report: {reference: FILE.jsonl}`): one JSON
  object per reference run, as `hf-skillit reference RUN_DIR` prints it (`reference_record`), e.g. skill-stratified
  on the same budget. The line compares the mean over the target skills (all evaluation skills without targets) and
  says when the budgets differ. A budget is the number of samples a run trained on, over all its processes: the sum
  of its trajectory's per-round `samples` (counted from the batches and summed across processes by the trainer), so
  a run on 2 processes and one on 1 process with the same recipe do not count as the same budget.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import yaml

from ..plotting import CHANCE_LOSS_KEY, INITIAL_LOSS_KEY, plot_run
from ..rundir import (
    GRAPH_JSON,
    RECIPE_NAME,
    SUMMARY_NAME,
    atomic_write_json,
    atomic_write_text,
    load_trajectory,
    read_trajectory,
)
from ..synthetic import answer_accuracy
from ..trainer import SkillItTrainer
from .build import make_trainer
from .sections import Recipe

__all__ = [
    "chance_levels",
    "explain_summary",
    "format_summary",
    "read_reference",
    "reference_record",
    "run",
    "train_and_report",
    "trajectory_budget",
]

CHANCE_ACCURACY_KEY = "chance_accuracy"


def _final_losses(trainer: SkillItTrainer) -> dict[str, float]:
    """Every evaluation skill's value for the final model."""
    # The last round ends at the last step, so its logged losses (the same on every process) are the final
    # model's: reuse them rather than run the validation sets and lm-eval tasks once more.
    prefix = "skillit/loss/"
    for entry in reversed(trainer.state.log_history):
        if entry.get("step") == trainer.state.global_step and any(key.startswith(prefix) for key in entry):
            losses = {key.removeprefix(prefix): value for key, value in entry.items() if key.startswith(prefix)}
            if set(trainer.skills.eval_skills) <= set(losses):
                return losses
    return trainer.evaluate_skills(list(trainer.skills.eval_skills))


def chance_levels(validation: Mapping[str, datasets.Dataset]) -> dict[str, dict[str, float]]:
    """Per skill, the chance level of data scored on its answer only (`labels` -100 elsewhere): `chance_loss`, the
    token-weighted entropy of the answer tokens at each answer position, and `chance_accuracy`, the share of the
    most frequent whole answer."""
    losses, accuracies = {}, {}
    for skill, dataset in validation.items():
        answers = [tuple(t for t in labels if t != -100) for labels in dataset["labels"]]
        answers = [a for a in answers if a]
        if not answers:
            continue
        by_position: dict[int, Counter] = {}
        for answer in answers:
            for i, token in enumerate(answer):
                by_position.setdefault(i, Counter())[token] += 1
        tokens = sum(len(a) for a in answers)
        entropy = 0.0
        for counts in by_position.values():
            n = sum(counts.values())
            entropy -= sum(c * math.log(c / n) for c in counts.values())
        losses[skill] = entropy / tokens
        accuracies[skill] = Counter(answers).most_common(1)[0][1] / len(answers)
    return {CHANCE_LOSS_KEY: losses, CHANCE_ACCURACY_KEY: accuracies}


def _summary(trainer: SkillItTrainer, recipe: Recipe) -> dict[str, dict[str, float]]:
    names = list(trainer.skills.eval_skills)
    summary = {"loss": _final_losses(trainer)}
    if recipe.data.synthetic is not None:
        validation = datasets.concatenate_datasets([trainer.skills.validation(n) for n in names])
        summary["accuracy"] = answer_accuracy(
            trainer.model, trainer.processing_class, validation, batch_size=trainer.args.per_device_eval_batch_size
        )
        if recipe.data.answer_only:
            summary.update(chance_levels({n: trainer.skills.validation(n) for n in names}))
    return summary


def trajectory_budget(trajectory: Sequence[Mapping[str, Any]]) -> int | None:
    """The samples a run trained on, over all processes: the sum of its rounds' `samples` (None without rounds).

    Not max_steps x per-device batch x accumulation from the recipe: that is per process, and the number of
    processes is not in the recipe (`torchrun` / `accelerate launch` decide it).
    """
    if not trajectory or any(not isinstance(record.get("samples"), Mapping) for record in trajectory):
        return None
    return int(sum(sum(record["samples"].values()) for record in trajectory))


def reference_record(run_dir: str | os.PathLike, label: str | None = None) -> dict[str, Any]:
    """One line of a reference file: a finished `hf-skillit train` run's final summary and the settings that say
    what it is (`label`, default: its mixing; `mixing`, `seed`, `max_steps`, `budget` = training samples over all
    processes, [`trajectory_budget`]), read from its `summary.json`, `recipe.yaml` and trajectory."""
    run_dir = Path(run_dir)
    for name in (SUMMARY_NAME, RECIPE_NAME):
        if not (run_dir / name).is_file():
            raise ValueError(f"{str(run_dir)!r} has no {name}: reference runs are finished `hf-skillit train` runs")
    with open(run_dir / SUMMARY_NAME) as f:
        summary = json.load(f)
    with open(run_dir / RECIPE_NAME) as f:
        training = (yaml.safe_load(f) or {}).get("training") or {}
    mixing = training.get("mixing", "skill_it")
    return {
        "label": label or mixing,
        "run": run_dir.name,
        "mixing": mixing,
        "seed": training.get("seed", 42),
        "max_steps": training.get("max_steps"),
        "budget": trajectory_budget(load_trajectory(run_dir)),
        **{key: summary[key] for key in ("loss", "accuracy") if key in summary},
    }


def read_reference(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The reference runs of a JSONL file (one `reference_record` per line); a ValueError names a bad line."""
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number} is not a JSON object: {err}") from None
            if not isinstance(record, dict) or not isinstance(record.get("loss"), dict):
                raise ValueError(f"{path}:{number} has no per-skill 'loss' mapping (see hf-skillit reference)")
            records.append(record)
    if not records:
        raise ValueError(f"{path} holds no reference runs")
    return records


def _mean(values: Mapping[str, float], skills: Sequence[str]) -> float | None:
    picked = [values[s] for s in skills if s in values]
    return sum(picked) / len(picked) if len(picked) == len(skills) else None


def _spread(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _comparison(
    summary: Mapping[str, Mapping[str, float]],
    reference: Sequence[Mapping[str, Any]],
    skills: Sequence[str],
    budget: int | None,
    where: str,
) -> str:
    labels = ", ".join(dict.fromkeys(str(r.get("label", r.get("mixing", "?"))) for r in reference))
    what = f"skill {skills[0]}" if len(skills) == 1 else f"mean over skills {', '.join(skills)}"
    cells = []
    for metric in ("loss", "accuracy"):
        ours = _mean(summary.get(metric, {}), skills)
        theirs = [v for r in reference if (v := _mean(r.get(metric) or {}, skills)) is not None]
        if ours is not None and theirs:
            diff = ours - statistics.mean(theirs)
            cells.append(f"{metric} {ours:.3f} vs {_spread(theirs)} ({diff:+.3f})")
    if not cells:
        return f"Reference {where}: no run there scored {what}."
    budgets = {r.get("budget") for r in reference}
    if budget is not None and budgets == {budget}:
        same = f"same budget, {budget} samples"
    else:
        shown = ", ".join(str(b) for b in sorted(b for b in budgets if b is not None)) or "unknown"
        same = f"NOT the same budget: reference {shown} samples, this run {budget}"
    runs = f"{len(reference)} run{'s' if len(reference) > 1 else ''}"
    return f"This run vs {labels} ({runs} in {where}; {same}), {what}: " + "; ".join(cells)


def explain_summary(
    summary: Mapping[str, Mapping[str, float]],
    trajectory: Sequence[Mapping[str, Any]] = (),
    target_skills: Sequence[str] = (),
    reference: str | os.PathLike | None = None,
    budget: int | None = None,
) -> list[str]:
    """The lines under the summary table that say what it means: chance levels, the skills that moved most, and the
    comparison with the reference runs in the file `reference` (see the module docstring)."""
    lines = []
    final = summary.get("loss", {})
    chance = summary.get(CHANCE_LOSS_KEY, {})
    if chance:
        below = [s for s in final if s in chance and final[s] < chance[s]]
        lines.append(
            "chance_*: what a model that ignores its input scores (loss: entropy of the answers; accuracy: the most "
            f"frequent answer). Below chance loss: {len(below)} of {len(final)} skills"
            + (f" ({', '.join(below)})." if below else ".")
        )
    start, when = {}, ""
    if trajectory:
        start, when = trajectory[0].get(INITIAL_LOSS_KEY) or {}, "before training"
        if not start:
            start, when = trajectory[0].get("eval_loss") or {}, f"after round 1 (step {trajectory[0]['global_step']})"
    moved = sorted((s for s in final if s in start), key=lambda s: final[s] - start[s])
    if moved:
        shown = ", ".join(f"skill {s} {start[s]:.3f} -> {final[s]:.3f}" for s in moved[:3])
        lines.append(
            f"Moved most (loss {when} -> final): {shown}" + (f"; least: skill {moved[-1]}" if len(moved) > 3 else "")
        )
    if reference is not None:
        skills = [s for s in target_skills if s in final] or list(final)
        lines.append(_comparison(summary, read_reference(reference), skills, budget, str(reference)))
    return lines


def trained_lines(
    trajectory: Sequence[Mapping[str, Any]], token_counts: Mapping[str, Mapping[str, Any]] | None = None
) -> list[str]:
    """What each skill trained on: p (the mixture, averaged over rounds), the rows and tokens trained and their
    shares, and the tokens its training text lost to truncation (`token_counts`: `SkillSet.token_counts`)."""
    if not trajectory or "tokens" not in trajectory[-1]:
        return []
    skills = list(trajectory[-1]["p"])
    p = {s: statistics.fmean(r["p"][s] for r in trajectory) for s in skills}
    rows = {s: sum(r["samples"][s] for r in trajectory) for s in skills}
    tokens = {s: sum(r["tokens"][s] for r in trajectory) for s in skills}
    total_rows, total_tokens = sum(rows.values()) or 1, sum(tokens.values()) or 1
    dropped = {s: (token_counts or {}).get(s, {}).get("train") for s in skills}
    header = ["skill", "p", "rows", "row share", "tokens", "token share"]
    if any(c is not None and c.dropped for c in dropped.values()):
        header.append("text tokens dropped")
    table = []
    for s in skills:
        cells = [s, f"{p[s]:.4f}", str(rows[s]), f"{rows[s] / total_rows:.4f}", f"{tokens[s]:,}"]
        cells.append(f"{tokens[s] / total_tokens:.4f}")
        if len(header) > len(cells):
            c = dropped[s]
            cells.append("-" if c is None else f"{c.dropped:,} of {c.tokens:,} ({c.dropped / max(c.tokens, 1):.1%})")
        table.append(cells)
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    lines = ["Trained per skill (p: the mixture averaged over rounds; shares of the rows and tokens trained):"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
    if len(header) > 6:
        lines.append("text tokens dropped: cut off by truncation at max_length (or the last partial block of packing)")
    return lines


def format_summary(summary: Mapping[str, Mapping[str, float]]) -> str:
    """A plain-text table: one row per skill, one column per metric."""
    metrics = list(summary)
    skills = list(dict.fromkeys(s for values in summary.values() for s in values))
    width = max(len("skill"), *(len(s) for s in skills))
    columns = [max(10, len(m)) for m in metrics]
    header = f"{'skill':<{width}}  " + "  ".join(f"{m:>{w}}" for m, w in zip(metrics, columns, strict=True))
    lines = [header, "-" * len(header)]
    for skill in skills:
        cells = [
            f"{summary[m][skill]:>{w}.4f}" if skill in summary[m] else f"{'-':>{w}}"
            for m, w in zip(metrics, columns, strict=True)
        ]
        lines.append(f"{skill:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def train_and_report(trainer: SkillItTrainer, recipe: Recipe, resume: bool = False) -> dict[str, Any]:
    """Train, save the final model, print the per-skill summary table and write plots into the run directory."""
    output_dir = recipe.training.output_dir
    if trainer.is_world_process_zero():
        atomic_write_text(os.path.join(output_dir, RECIPE_NAME), yaml.safe_dump(recipe.raw, sort_keys=False))
        if trainer.graph is not None:
            trainer.graph.save(os.path.join(output_dir, GRAPH_JSON))
    trainer.train(resume_from_checkpoint=True if resume else None)
    trainer.save_model()
    summary = _summary(trainer, recipe)  # on every process: a fallback evaluation is collective
    if trainer.is_world_process_zero():
        atomic_write_json(os.path.join(output_dir, SUMMARY_NAME), summary, indent=1)
        plots = plot_run(output_dir)
        print(f"\nFinal validation per skill ({output_dir}):\n{format_summary(summary)}")
        reference = recipe.report.reference if recipe.report is not None else None
        trajectory = read_trajectory(output_dir)
        targets = recipe.training.target_skills or ()
        for line in explain_summary(summary, trajectory, targets, reference, trajectory_budget(trajectory)):
            print(line)
        for line in trained_lines(trajectory, getattr(trainer.skills, "token_counts", None)):
            print(line)
        print("Plots: " + ", ".join(str(p) for p in plots))
    return summary


def run(recipe: Recipe, resume: bool = False) -> dict[str, Any]:
    """Train a recipe end to end; returns the final per-skill summary ({"loss": ..., "accuracy": ...})."""
    return train_and_report(make_trainer(recipe, resume), recipe, resume)
