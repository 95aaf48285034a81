"""How a recipe's mixture would move, before training (`hf-skillit train RECIPE --dry-run --measure`).

The dry run's p_1 (`hf_skillit.recipes.plan`) reads only the graph; the rounds after it read the validation losses
too, p_{t+1} ∝ exp(eta · A · Σ_window L) (paper Algorithm 1), so an eta that suits one loss scale collapses the
mixture on another (issue 23: eta 2 put 96 % on one source of four after one round on text with losses near 10
nats). This module builds the run as `hf-skillit train` would (model, data, graph, mixer, lm-eval evaluators) in a
temporary output directory, scores each evaluation skill once on a few validation rows (the losses before
training, round 0), and feeds those losses to the run's own mixer: p_2 is the mixture after a first round whose
losses stayed at their round-0 values, p_{w+1} the mixture once the window holds w such rounds. Real losses fall
during training, and a skill that falls faster loses weight, so these show the scale of the update, not the run's
trajectory. Before them, the tokens of each map-style skill's training text as the run tokenizes it (documents,
tokens, rows, and what truncation or packing's last partial block drops). The measurement imports torch, loads the
model and tokenizes the data: it is what the plain dry run (`hf_skillit.recipes.plan`) leaves out.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..mixer_registry import is_probing
from .loading import load_recipe
from .plan import table

__all__ = ["measure_mixtures"]

# A relevant skill below this weight is called starved in the report.
STARVED = 0.01


def _token_table(skills: Any) -> list[str]:
    """Per map-style training skill of the run's (tokenized) `SkillSet`: documents, tokens, rows and the tokens
    dropped (streaming skills are counted as training reads them, in the run summary)."""
    rows = []
    for name in skills.train_skills:
        counts = skills.token_counts.get(name, {}).get("train")
        if counts is None:
            continue
        share = f" ({counts.dropped / counts.tokens:.1%})" if counts.tokens else ""
        rows.append((name, counts.documents, f"{counts.tokens:,}", counts.rows, f"{counts.dropped:,}{share}"))
    if not rows:
        return []
    header = ("skill", "documents", "tokens", "rows", "tokens dropped")
    return ["Training text per skill (streaming skills are counted as they are read):", *table(header, rows), ""]


def measure_mixtures(path: str, overrides: Sequence[str] = (), rows: int = 16) -> str:
    """Round-0 losses on `rows` validation rows per skill, and the mixtures p_1, p_2 and p_{w+1} the recipe's mixer
    computes from them, as text. Nothing is trained and nothing is written outside a temporary directory."""
    from .build import make_trainer

    if rows < 1:
        raise ValueError(f"--measure-rows must be >= 1, got {rows}")
    with tempfile.TemporaryDirectory() as tmp:
        recipe = load_recipe(
            path,
            [
                *overrides,
                f"training.output_dir={tmp}",
                "training.overwrite_output_dir=true",
                f"training.eval_samples_per_skill={rows}",
                "training.report_to=none",
            ],
        )
        trainer = make_trainer(recipe)
        mixer = trainer.mixer
        losses = trainer.evaluate_skills()
    training = recipe.training
    settings = (
        f"mixing {training.mixing}, eta {training.eta}, window {training.window} ({training.window_reduce}), "
        f"loss_normalization {training.loss_normalization}, mixture_smoothing {training.mixture_smoothing}"
    )
    lines = _token_table(trainer.skills)
    lines += [f"Measured before training ({rows} validation rows per skill; {settings}):", ""]
    lines += table(("evaluation skill", "round-0 loss"), [(s, f"{losses[s]:.4f}") for s in mixer.eval_skills])
    lines.append("")
    if not mixer.eval_skills:
        lines.append(f"mixing {training.mixing!r} does not read the losses: the mixture is the plan's p_1 throughout.")
        return "\n".join(lines)
    if is_probing(mixer):  # Aioli: every p comes from probe phases trained during the run
        lines.append(f"mixing {training.mixing!r} sets each round's p from its probe phases: nothing to replay here.")
        return "\n".join(lines)
    round_0 = {s: losses[s] for s in mixer.eval_skills}
    if callable(set_initial := getattr(mixer, "set_initial_losses", None)):
        set_initial(round_0)  # as the trainer does before the first step
    window = int(getattr(mixer, "window", 1))
    mixtures = [np.asarray(mixer.initial()), np.asarray(mixer.update(round_0))]
    full = mixtures[1]
    for _ in range(window - 1):
        full = np.asarray(mixer.update(round_0))
    mixtures.append(full)
    header = ("training skill", "p_1", "p_2", f"p_{window + 1}")
    mixture_rows = [(skill, *(f"{p[i]:.4f}" for p in mixtures)) for i, skill in enumerate(mixer.train_skills)]
    lines.append(f"Mixtures at the round-0 losses (p_2: after round 1; p_{window + 1}: the window of {window} full):")
    lines += table(header, mixture_rows)
    final = mixtures[-1]
    starved = [s for s, w in zip(mixer.train_skills, final, strict=True) if w < STARVED]
    if starved or final.max() > 0.9:
        hint = (
            "a smaller eta"
            if training.loss_normalization != "none"
            else "a smaller eta, or training.loss_normalization=initial (eta then reads relative losses)"
        )
        lines.append("")
        lines.append(
            f"Warning: at these losses the mixture collapses (largest weight {final.max():.3f}"
            + (f"; below {STARVED} for {', '.join(starved)}" if starved else "")
            + f"). Consider {hint}, or training.mixture_smoothing to keep a floor (docs/skill_it_options.md)."
        )
    return "\n".join(lines)
