"""Running a recipe and reporting: train, save the model, write the recipe, the summary and the plots into the run
directory (`hf_skillit.rundir` names the files), and print the per-skill table."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import datasets
import yaml

from ..plotting import plot_run
from ..rundir import GRAPH_JSON, RECIPE_NAME, SUMMARY_NAME
from ..synthetic import answer_accuracy
from ..trainer import SkillItTrainer
from .build import make_trainer
from .sections import Recipe

__all__ = ["format_summary", "run", "train_and_report"]


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


def _summary(trainer: SkillItTrainer, recipe: Recipe) -> dict[str, dict[str, float]]:
    names = list(trainer.skills.eval_skills)
    summary = {"loss": _final_losses(trainer)}
    if recipe.data.synthetic is not None:
        validation = datasets.concatenate_datasets([trainer.skills.validation(n) for n in names])
        summary["accuracy"] = answer_accuracy(
            trainer.model, trainer.processing_class, validation, batch_size=trainer.args.per_device_eval_batch_size
        )
    return summary


def format_summary(summary: Mapping[str, Mapping[str, float]]) -> str:
    """A plain-text table: one row per skill, one column per metric."""
    metrics = list(summary)
    skills = list(dict.fromkeys(s for values in summary.values() for s in values))
    width = max(len("skill"), *(len(s) for s in skills))
    header = f"{'skill':<{width}}  " + "  ".join(f"{m:>10}" for m in metrics)
    lines = [header, "-" * len(header)]
    for skill in skills:
        cells = [f"{summary[m][skill]:>10.4f}" if skill in summary[m] else f"{'-':>10}" for m in metrics]
        lines.append(f"{skill:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def train_and_report(trainer: SkillItTrainer, recipe: Recipe, resume: bool = False) -> dict[str, Any]:
    """Train, save the final model, print the per-skill summary table and write plots into the run directory."""
    output_dir = recipe.training.output_dir
    if trainer.is_world_process_zero():
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, RECIPE_NAME), "w") as f:
            yaml.safe_dump(recipe.raw, f, sort_keys=False)
        if trainer.graph is not None:
            trainer.graph.save(os.path.join(output_dir, GRAPH_JSON))
    trainer.train(resume_from_checkpoint=True if resume else None)
    trainer.save_model()
    summary = _summary(trainer, recipe)  # on every process: a fallback evaluation is collective
    if trainer.is_world_process_zero():
        with open(os.path.join(output_dir, SUMMARY_NAME), "w") as f:
            json.dump(summary, f, indent=1)
        plots = plot_run(output_dir)
        print(f"\nFinal validation per skill ({output_dir}):\n{format_summary(summary)}")
        print("Plots: " + ", ".join(str(p) for p in plots))
    return summary


def run(recipe: Recipe, resume: bool = False) -> dict[str, Any]:
    """Train a recipe end to end; returns the final per-skill summary ({"loss": ..., "accuracy": ...})."""
    return train_and_report(make_trainer(recipe, resume), recipe, resume)
