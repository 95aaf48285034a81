"""A recipe's run plan, shown without training (`hf-skillit train RECIPE --dry-run`): what each skill's data is read
from, how text becomes rows, the mixture of round 1 (p_1) and the lm-eval tasks, without importing torch.

The plan answers in about a second, so it reads what needs no model library: the recipe as
`hf_skillit.recipes.loading.check_recipe` checks it, the user's files opened as the run would open them
(streaming sources read only their held-out validation prefix), a synthetic task's rows generated but not encoded,
the graph built and checked against the data, and p_1 from the mixer the trainer would build
(`hf_skillit.mixer_registry.build_mixer`). A mixer that scores the data with the model first (the sample-level
curricula) has no p_1 before the model is loaded, and the plan says so. What needs the tokenizer or the model, the
tokens per skill and the mixtures after round 1, is `--measure`'s (`hf_skillit.recipes.measure`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from ..mixer_registry import build_mixer, mixer_class
from .graphs import build_graph
from .loading import as_list, expand_files, file_builder
from .schema import RecipeError
from .sections import Recipe, recipe_trainer
from .synthetic import _with_train_rows, synthetic_rows

if TYPE_CHECKING:
    from ..skills import SkillSet

__all__ = ["SkillSizes", "describe_run", "table"]


class SkillSizes(NamedTuple):
    """What the plan reads of a `SkillSet`: the skills and their rows (None: a stream), with its `train_sizes()`
    for the mixer."""

    train_skills: tuple[str, ...]
    eval_skills: tuple[str, ...]
    train: dict[str, int | None]
    validation: dict[str, int]

    def train_sizes(self) -> dict[str, int | None]:
        return dict(self.train)

    @classmethod
    def of(cls, skills: SkillSet) -> SkillSizes:
        validation = {name: len(skills.validation(name)) for name in skills.eval_skills}
        return cls(tuple(skills.train_skills), tuple(skills.eval_skills), skills.train_sizes(), validation)

    @classmethod
    def of_recipe(cls, recipe: Recipe) -> SkillSizes:
        """The recipe's skills as the run would load them: a synthetic task's rows generated and counted, the
        user's data opened through `hf_skillit.recipes.data` (which imports `datasets`)."""
        if recipe.data.synthetic is None:
            from .data import user_skills

            return cls.of(user_skills(recipe.data))
        train, validation, order = synthetic_rows(_with_train_rows(recipe))
        train_counts, validation_counts = (Counter(row["skill"] for row in rows) for rows in (train, validation))
        evaluated = tuple(dict.fromkeys(row["skill"] for row in validation))
        return cls(
            tuple(order),
            evaluated,
            {name: train_counts[name] for name in order},
            {name: validation_counts[name] for name in evaluated},
        )


class _TaskNames:
    """Stands for the lm-eval evaluator in the graph checks: its skills are the recipe's task names, unloaded."""

    def __init__(self, tasks: Sequence[str]):
        self.skills = tuple(tasks)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(f"{cell:<{w}}" for cell, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(f"{cell!s:<{w}}" for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return ["  " + line for line in lines]


def _sources(recipe: Recipe, skills: SkillSizes) -> list[str]:
    data = recipe.data
    rows = []
    for name in skills.train_skills:
        size = skills.train[name]
        if data.synthetic is not None:
            source = f"synthetic {data.synthetic}, {size} rows"
        elif data.train_files is not None:
            files = expand_files(data.train_files[name])
            kind = file_builder(files[0], "data.train_files")
            shown = files[0] if len(files) == 1 else f"{os.path.dirname(files[0])}/ ({len(files)} files)"
            source = f"{kind} {shown}, " + ("streaming" if data.streaming else f"{size} rows")
        elif data.train_file is not None:
            source = f"rows of {', '.join(as_list(data.train_file))} with {data.skill_column}={name}: {size}"
        else:
            source = f"Natural Instructions tasks in {data.natural_instructions}: {size} rows"
        if name not in skills.eval_skills:
            validation = "none"
        elif data.validation_files is not None or data.validation_file is not None or data.synthetic is not None:
            validation = f"{skills.validation[name]} rows (separate split)"
        elif size is None:
            validation = f"first {skills.validation[name]} rows of the stream (never trained on)"
        else:
            validation = f"{skills.validation[name]} rows held out"
        rows.append((name, source, validation))
    return table(("skill", "training data", "validation"), rows)


def _rows(recipe: Recipe, skills: SkillSizes) -> list[str]:
    """How text becomes rows and the tokens a step trains."""
    training = recipe.training
    length = training.max_length
    if recipe.data.synthetic is not None:  # rows are the generated samples, of one length per task
        return []
    if training.packing:
        lines = [f"Rows: each skill's documents packed into blocks of {length} tokens; p is a share of tokens"]
    elif length is not None:
        how = "cut into rows" if training.long_documents == "chunk" else "truncated"
        lines = [f"Rows: one per document, longer ones {how} at {length} tokens; p is a share of rows"]
    else:
        lines = ["Rows: one per document, as long as it is (no max_length); p is a share of rows"]
    if (per_step := training.tokens_per_step) is not None:
        total = f"{training.max_steps} steps x {per_step:,} tokens = {training.max_steps * per_step:,} tokens"
        budget = f"token_budget {training.token_budget:,}: " if training.token_budget is not None else ""
        lines.append(
            f"Tokens: {budget}{total} ({training.world_size} process(es); a step is {length} tokens x "
            f"{training.per_device_train_batch_size} rows x {training.gradient_accumulation_steps} "
            "accumulation x processes)"
        )
    if any(size is not None for size in skills.train.values()):
        lines.append("Tokens per skill: counted by `--dry-run --measure`, which tokenizes the data")
    return lines


def describe_run(recipe: Recipe) -> str:
    """The plan of `recipe`'s run as text: sources per skill, p_1 and the lm-eval tasks. Loads no model."""
    training = recipe.training
    skills = SkillSizes.of_recipe(recipe)
    lines = [
        f"Run plan of {recipe.source or 'the recipe'} (dry run: nothing trained, no model loaded)",
        "",
        f"trainer: {recipe_trainer(recipe.raw)}, output_dir: {training.output_dir}",
        f"{len(skills.train_skills)} training skills:",
        *_sources(recipe, skills),
        *_rows(recipe, skills),
        "",
    ]
    # From the raw section: `check_recipe` leaves `lm_eval:` (lm-eval's imports) to the run.
    lm_eval = recipe.raw.get("lm_eval") or {}
    tasks = [str(task) for task in lm_eval.get("tasks") or []]
    settings = f"mixing: {training.mixing}, eta {training.eta}, rounds {training.rounds}, window {training.window}"
    if training.loss_normalization != "none":
        settings += f", loss_normalization {training.loss_normalization}"
    if training.mixture_smoothing:
        settings += f", mixture_smoothing {training.mixture_smoothing} (p_1 included)"
    mixer = mixer_class(training.mixing)
    graph_missing = recipe.graph.path is not None and not os.path.isfile(recipe.graph.path)
    if callable(getattr(mixer, "prepare", None)):
        lines.append(f"Mixture of round 1 ({settings}): decided by scoring the data with the model, not in a dry run")
    elif graph_missing and getattr(mixer, "needs_graph", False):
        lines.append(f"Mixture of round 1 ({settings}): not computed, graph.path {recipe.graph.path!r} not found yet")
        lines.append(f"  (learn it with `hf-skillit learn-graph {recipe.source or 'RECIPE.yaml'}`)")
    else:
        graph = None if graph_missing else build_graph(recipe, skills, [_TaskNames(tasks)] if tasks else [])
        try:
            _, mixer = build_mixer(
                training, skills, graph, graph_hint="set graph.path, graph.matrix or graph.reasoning"
            )
        except ValueError as err:
            raise RecipeError(f"training.mixing: {err}") from None
        lines.append(f"Mixture of round 1, p_1 ({settings}):")
        p_1 = zip(mixer.train_skills, mixer.initial(), strict=True)
        lines += table(("skill", "p_1"), [(skill, f"{weight:.4f}") for skill, weight in p_1])
    lines.append("")
    if tasks:
        given = ", ".join(f"{key} {lm_eval[key]}" for key in ("metric", "limit") if key in lm_eval)
        lines.append(f"lm-eval tasks (evaluation skills{', ' + given if given else ''}):")
        lines.append("  " + ", ".join(tasks))
    else:
        lines.append("lm-eval tasks: none")
    return "\n".join(lines)
