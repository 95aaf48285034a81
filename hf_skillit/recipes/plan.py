"""A recipe's run plan, shown without training (`hf-skillit train RECIPE --dry-run`): what each skill's data is read
from, the mixture of round 1 (p_1) and the lm-eval tasks, without loading the model or the lm-eval datasets.

The data is opened as the run would open it (streaming sources read only their held-out validation prefix), the
graph is built and checked against the data, and p_1 comes from the mixer the trainer would build
(`hf_skillit.mixer_registry.build_mixer`). A mixer that scores the data with the model first (the sample-level curricula)
has no p_1 before the model is loaded, and the plan says so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..mixer_registry import build_mixer, mixer_class
from ..skills import SkillSet
from .build import build_graph
from .data import load_data, load_tokenizer, user_skills
from .loading import as_list, expand_files, file_builder
from .schema import RecipeError
from .sections import Recipe, recipe_trainer

__all__ = ["describe_run"]


class _TaskNames:
    """Stands for the lm-eval evaluator in the graph checks: its skills are the recipe's task names, unloaded."""

    def __init__(self, tasks: Sequence[str]):
        self.skills = tuple(tasks)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(f"{cell:<{w}}" for cell, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(f"{cell!s:<{w}}" for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return ["  " + line for line in lines]


def _sources(recipe: Recipe, skills: SkillSet) -> list[str]:
    data = recipe.data
    rows = []
    sizes = skills.train_sizes()
    for name in skills.train_skills:
        size = sizes[name]
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
            validation = f"{len(skills.validation(name))} rows (separate split)"
        elif size is None:
            validation = f"first {len(skills.validation(name))} rows of the stream (never trained on)"
        else:
            validation = f"{len(skills.validation(name))} rows held out"
        rows.append((name, source, validation))
    return _table(("skill", "training data", "validation"), rows)


def _rows(recipe: Recipe, skills: SkillSet) -> list[str]:
    """How text becomes rows, the tokens a step trains, and per map-style skill its documents, tokens, training rows
    and the tokens truncation (or packing's last partial block) drops, from the recipe's own tokenizer."""
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
    sizes = skills.train_sizes()
    counted = [name for name in skills.train_skills if sizes[name] is not None]
    if not counted:
        return lines
    try:
        tokenizer = load_tokenizer(recipe.model)
    except (OSError, ValueError) as err:
        return [*lines, f"Tokens per skill: not counted, the tokenizer did not load ({str(err).splitlines()[0]})"]
    prepared = skills.subset(counted).tokenized(
        tokenizer,
        training.dataset_text_field,
        length,
        packing=training.packing,
        long_documents=training.long_documents,
        num_proc=training.dataset_num_proc,
    )
    rows = []
    for name in counted:
        counts = prepared.token_counts.get(name, {}).get("train")
        if counts is None:
            continue
        share = f" ({counts.dropped / counts.tokens:.1%})" if counts.tokens else ""
        rows.append((name, counts.documents, f"{counts.tokens:,}", counts.rows, f"{counts.dropped:,}{share}"))
    if rows:
        lines.append("Training text per skill (streaming skills are counted as they are read):")
        lines += _table(("skill", "documents", "tokens", "rows", "tokens dropped"), rows)
    return lines


def describe_run(recipe: Recipe) -> str:
    """The plan of `recipe`'s run as text: sources per skill, p_1 and the lm-eval tasks. Loads no model."""
    training = recipe.training
    if recipe.data.synthetic is not None:
        _, skills, _ = load_data(recipe)  # the built-in tokenizer encodes the synthetic rows
    else:
        skills = user_skills(recipe.data)  # untokenized: the plan needs names, sizes and validation rows only
    lines = [
        f"Run plan of {recipe.source or 'the recipe'} (dry run: nothing trained, no model loaded)",
        "",
        f"trainer: {recipe_trainer(recipe.raw)}, output_dir: {training.output_dir}",
        f"{len(skills.train_skills)} training skills:",
        *_sources(recipe, skills),
        *_rows(recipe, skills),
        "",
    ]
    tasks = list(recipe.lm_eval.tasks) if recipe.lm_eval is not None else []
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
        lines += _table(("skill", "p_1"), [(skill, f"{weight:.4f}") for skill, weight in p_1])
    lines.append("")
    if tasks:
        lm_eval = recipe.lm_eval
        lines.append(f"lm-eval tasks (evaluation skills, metric {lm_eval.metric}, limit {lm_eval.limit}):")
        lines.append("  " + ", ".join(tasks))
    else:
        lines.append("lm-eval tasks: none")
    return "\n".join(lines)
