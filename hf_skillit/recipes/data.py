"""A recipe's data: its tokenizer and its `SkillSet`, from a synthetic task, the user's files, or a
Super-NaturalInstructions checkout."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import datasets
import pyarrow as pa
from datasets.exceptions import DatasetGenerationError

from ..packing import longest_row
from ..skills import SkillSet
from .hub import hub_kwargs
from .loading import as_list, expand_files, file_builder
from .schema import RecipeError, recipe_error
from .sections import DataArguments, ModelArguments
from .synthetic import _with_train_rows, synthetic_rows

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from .sections import Recipe

__all__ = ["load_data", "load_natural_instructions", "load_tokenizer"]


# What `datasets` raises on a file it cannot parse: its own error wrapping pyarrow's, pyarrow's when streaming, and
# StopIteration from an empty file.
_READ_ERRORS = (DatasetGenerationError, pa.ArrowException, StopIteration, ValueError, OSError, UnicodeDecodeError)


def _reason(err: BaseException) -> str:
    """The innermost cause's message, first line: `datasets` wraps the parser's error, which names the file."""
    while err.__cause__ is not None or (err.__context__ is not None and not str(err).strip()):
        err = err.__cause__ or err.__context__
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _load_files(
    paths: str | list[str], where: str, streaming: bool = False
) -> datasets.Dataset | datasets.IterableDataset:
    files = as_list(paths)
    builders = {file_builder(p, where) for p in files}
    if len(builders) > 1:
        raise RecipeError(f"{where}: files of different formats cannot be read together: {files}")
    if empty := [f for f in expand_files(files) if os.path.isfile(f) and os.path.getsize(f) == 0]:
        raise RecipeError(f"{where}: {empty[0]!r} is empty")
    try:
        data = datasets.load_dataset(builders.pop(), data_files=files, split="train", streaming=streaming)
        if streaming:  # a stream opens without reading: read its first row, so a broken file fails here, named
            next(iter(data.take(1)))
    except _READ_ERRORS as err:
        shown = files[0] if len(files) == 1 else f"{len(files)} paths ({files[0]}, ...)"
        raise RecipeError(f"{where}: cannot read {shown}: {_reason(err)}") from None
    return data


def _snake(name: str) -> str:
    return "_".join(name.lower().split())


def load_natural_instructions(
    tasks_dir: str,
    skill: str = "category",
    skills: Sequence[str] | None = None,
    max_samples_per_task: int | None = None,
) -> datasets.Dataset:
    """Rows `text`, `skill`, `task` from the task JSON files of a Super-NaturalInstructions `tasks/` directory.

    A task's skill is its first category in snake case (`question_answering`), or with `skill="category_language"`
    the category and the input language (`question_generation_spanish`, paper Table 2). The text is the task
    definition, the instance input and its first reference output.
    """
    wanted = None if skills is None else set(skills)
    # One table per task, concatenated: Arrow holds the text compactly, where one list of dicts of the whole
    # collection (over a million instances) would not fit comfortably in memory.
    tables = []
    for file in sorted(glob.glob(os.path.join(tasks_dir, "task*.json"))):
        with open(file) as f:
            task = json.load(f)
        name = _snake(task["Categories"][0])
        if skill == "category_language":
            name = f"{name}_{_snake(task['Input_language'][0])}"
        if wanted is not None and name not in wanted:
            continue
        definition = task["Definition"][0]
        instances = task["Instances"][:max_samples_per_task]
        tables.append(
            datasets.Dataset.from_dict(
                {
                    "text": [
                        f"Definition: {definition}\n\nInput: {i['input']}\nOutput: {i['output'][0]}" for i in instances
                    ],
                    "skill": [name] * len(instances),
                    "task": [os.path.splitext(os.path.basename(file))[0]] * len(instances),
                }
            )
        )
    if not tables:
        raise RecipeError(f"no task of skills {sorted(wanted or [])} in {tasks_dir!r} (skill: {skill})")
    return datasets.concatenate_datasets(tables)


def _select_skills(ds: datasets.Dataset, column: str, skills: Sequence[str] | None, where: str) -> list[str]:
    """The training skills in order (`skills`, or the data's order of appearance), checked against the data."""
    if column not in ds.column_names:
        raise RecipeError(f"{where} has no column {column!r} (columns: {', '.join(ds.column_names)})")
    present = list(dict.fromkeys(str(v) for v in ds[column]))
    if skills is None:
        return present
    if missing := [s for s in skills if s not in present]:
        raise RecipeError(f"data.skills: no rows of skill(s) {missing} in {where} (skills there: {present})")
    return list(skills)


def _by_column(
    train: datasets.Dataset, validation: datasets.Dataset | None, data: DataArguments, column: str, where: str
) -> SkillSet:
    """Split one table into skills by `column`, keeping `data.skills` (in that order) if given."""
    order = _select_skills(train, column, data.skills, where)
    if set(order) != set(str(v) for v in train[column]):
        keep = set(order)
        train = train.filter(lambda batch: [str(v) in keep for v in batch[column]], batched=True)
    # Skill names are strings; a column of ints (e.g. LEGO depths) would not match the graph's names.
    if str(train.features[column].dtype) != "string":
        train = train.cast_column(column, datasets.Value("string"))
    if validation is not None and str(validation.features[column].dtype) != "string":
        validation = validation.cast_column(column, datasets.Value("string"))
    held_out = validation if validation is not None else data.validation_per_skill
    return SkillSet.from_column(train, column=column, validation=held_out, order=order, seed=data.seed)


def _space_answers(batch: dict[str, list]) -> dict[str, list]:
    # With a leading space the answer tokenizes alone as it does inside the text, under BPE tokenizers too
    # (`encode` checks that); the word-level tokenizer ignores the space.
    return {"answer": [" " + a for a in batch["answer"]]}


def synthetic_skills(data: DataArguments, tokenizer: PreTrainedTokenizerBase) -> tuple[SkillSet, int]:
    """The synthetic task's SkillSet (encoded) and its sequence length."""
    from ..synthetic import encode

    train, validation, order = synthetic_rows(data)
    train, validation = (
        encode(
            datasets.Dataset.from_list(rows).map(_space_answers, batched=True), tokenizer, answer_only=data.answer_only
        )
        for rows in (train, validation)
    )
    skills = SkillSet.from_column(train, column="skill", validation=validation, order=order)
    return skills, max(len(train[0]["input_ids"]), len(validation[0]["input_ids"]))


def user_skills(data: DataArguments) -> SkillSet:
    if data.natural_instructions is not None:
        ds = load_natural_instructions(
            data.natural_instructions, data.sni_skill, data.skills, data.max_samples_per_task
        )
        return _by_column(ds, None, data, "skill", data.natural_instructions)
    if data.train_file is not None:
        train = _load_files(data.train_file, "data.train_file")
        validation = (
            None if data.validation_file is None else _load_files(data.validation_file, "data.validation_file")
        )
        return _by_column(train, validation, data, data.skill_column, "data.train_file")
    order = data.skills if data.skills is not None else list(data.train_files)
    if unknown := [s for s in order if s not in data.train_files]:
        raise RecipeError(
            f"data.skills: {unknown} have no entry in data.train_files (skills: {list(data.train_files)})"
        )
    # Streaming sources are opened, not read; a held-out validation prefix is their only rows read here.
    train = {s: _load_files(data.train_files[s], f"data.train_files[{s!r}]", data.streaming) for s in order}
    if data.validation_files is not None:
        validation = {s: _load_files(p, f"data.validation_files[{s!r}]") for s, p in data.validation_files.items()}
        return SkillSet(train, validation)
    try:
        return SkillSet.from_dict(train, validation=data.validation_per_skill, seed=data.seed)
    except ValueError as err:  # e.g. a source with no more rows than the held-out prefix
        raise recipe_error(err, "data.train_files") from None


def load_tokenizer(args: ModelArguments) -> PreTrainedTokenizerBase:
    name = args.tokenizer or args.checkpoint()
    if name is None:
        from ..synthetic import build_tokenizer

        return build_tokenizer()
    from transformers import AutoTokenizer

    revision = args.revision if name == args.name_or_path else None
    where = "model.tokenizer" if args.tokenizer else "model.name_or_path"
    tokenizer = AutoTokenizer.from_pretrained(name, revision=revision, **hub_kwargs(name, revision, where))
    if tokenizer.pad_token is None:
        # Causal LM tokenizers often have no pad token; padding positions are masked out of the loss anyway.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_data(recipe: Recipe) -> tuple[PreTrainedTokenizerBase, SkillSet, int | None]:
    """The tokenizer, the SkillSet and the sequence length of the recipe's data."""
    tokenizer = load_tokenizer(recipe.model)
    if recipe.data.synthetic is not None:
        skills, seq_len = synthetic_skills(_with_train_rows(recipe), tokenizer)
        return tokenizer, skills, seq_len
    if recipe.model.tiny is not None and recipe.model.tokenizer is None:
        raise RecipeError(
            "model.tiny with user data needs model.tokenizer: the built-in tokenizer only knows the synthetic tasks"
        )
    skills, training = user_skills(recipe.data), recipe.training
    if recipe.model.tiny is None or training.max_length is not None or "max_position_embeddings" in recipe.model.tiny:
        return tokenizer, skills, training.max_length
    # A tiny model without max_length is sized to the longest row of the data, as the trainer will tokenize it.
    if streaming := [name for name, size in skills.train_sizes().items() if size is None]:
        raise RecipeError(
            f"model.tiny with streaming skills ({', '.join(streaming)}) needs training.max_length (or "
            "model.tiny.max_position_embeddings): a stream's rows cannot be measured before training"
        )
    prepared = skills.tokenized(
        tokenizer,
        training.dataset_text_field,
        long_documents=training.long_documents,
        num_proc=training.dataset_num_proc,
    )
    return tokenizer, skills, max(longest_row(data) for data in prepared.splits().values())
