"""Loading a recipe: read the YAML, apply `section.key=value` overrides, check every section and every local path.

Nothing is loaded here (no data, no model): [`load_recipe`] only finds what is wrong, with the key, the file and how
to get it, before anything trains. [`check_recipe`] does the same without importing torch or transformers (the
`training:` section through `hf_skillit.recipes.training_fields`, the Skill-It settings through
`hf_skillit.settings`), for the CLI's first answer and its dry run; it leaves a few sections to `load_recipe`.
"""

from __future__ import annotations

import copy
import glob
import os
from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import Any

from ..settings import check_settings
from .schema import (
    RecipeError,
    check_mapping,
    dataclass_schema,
    load_yaml,
    parse_arguments_section,
    parse_flags,
    recipe_error,
    unknown_key,
)
from .sections import SECTION_TYPES, SECTIONS, SNI_URL, Recipe, recipe_trainer, section_class, training_class
from .training_fields import TrainingSettings, fields_parser, source_field_names, stored_fields

__all__ = ["as_list", "check_recipe", "file_builder", "load_recipe", "read_recipe"]

# `datasets` builders for local files, by extension; compressed files keep the builder of their inner extension.
_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    path = key.strip().split(".")
    if not sep or len(path) < 2 or not all(path):
        raise RecipeError(f"override {override!r} must look like section.key=value (e.g. training.max_steps=60)")
    value = load_yaml(text, f"the value of override {override!r}")
    node = raw
    for depth, part in enumerate(path[:-1]):
        if depth == 0 and part not in SECTIONS:
            raise unknown_key(part, "the recipe", list(SECTIONS))
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            raise RecipeError(f"override {override!r}: {'.'.join(path[: depth + 1])} is not a mapping")
        node = node[part]
    if value is None and len(path) > 2:
        # A key inside a section's mapping (`model.tiny.max_position_embeddings=null`): removed, so that the
        # function the mapping is passed to uses its default. A section's own key keeps null, its documented
        # "not set" value (`graph.reasoning=null`, `training.single_thread_max_params=null`).
        node.pop(path[-1], None)
        return
    node[path[-1]] = value


def _resolve_auto_bf16(raw: dict[str, Any]) -> None:
    """`training.bf16: auto`: bf16 mixed precision where a GPU supports it, float32 elsewhere (the CPU)."""
    training = raw.get("training")
    if isinstance(training, dict) and training.get("bf16") == "auto":
        import torch

        training["bf16"] = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _early_keys(section: str, mapping: dict[str, Any]) -> list[str] | None:
    """The keys section `section` knows, where they can be read without importing its libraries; else None.

    `training:` (with the default trainer) is `SkillItConfig`: `TrainingArguments`' fields and its own, read from
    the sources. `learn_graph:`, `lm_eval:` and `trainer: sft` import their libraries to know their keys."""
    if section == "training":
        if mapping.get("trainer", "skillit") != "skillit":
            return None
        return [*source_field_names(), "trainer"]
    if section in ("model", "data", "graph", "report"):
        return list(dataclass_schema(section_class(section)))
    return None


def _check_keys_early(raw: dict[str, Any]) -> None:
    """Unknown keys, before torch and transformers are imported (seconds): the most common mistake in a recipe or a
    `--set` is answered at once. Everything else is checked by the full parse that follows."""
    for section in SECTIONS:
        mapping = raw.get(section)
        if not isinstance(mapping, dict) or (known := _early_keys(section, mapping)) is None:
            continue
        for key in mapping:
            if key not in known:
                raise unknown_key(key, section, [k for k in known if k != "trainer"])


def _local_path_missing(path: str) -> bool:
    return not (glob.glob(path) if glob.has_magic(path) else os.path.exists(path))


def expand_files(paths: str | list[str]) -> list[str]:
    """The files that paths and globs name, sorted."""
    return sorted(f for p in as_list(paths) for f in (glob.glob(p) if glob.has_magic(p) else [p]))


def as_list(paths: str | list[str]) -> list[str]:
    return [paths] if isinstance(paths, str) else list(paths)


def _missing_data(where: str, path: str, hint: str | None) -> RecipeError:
    message = f"{where}: {path!r} not found"
    return RecipeError(f"{message}. {hint}" if hint else message)


def _check_paths(recipe: Recipe, check_graph: bool) -> None:
    """Every local path the recipe reads exists; otherwise say what is missing and how to get it."""
    data = recipe.data
    if data.natural_instructions is not None:
        hint = data.download or (
            f"This recipe trains on Super-NaturalInstructions: `git clone {SNI_URL}` and point "
            "data.natural_instructions at its tasks/ directory"
        )
        if not os.path.isdir(data.natural_instructions):
            raise _missing_data("data.natural_instructions", data.natural_instructions, hint)
        if not glob.glob(os.path.join(data.natural_instructions, "task*.json")):
            raise RecipeError(
                f"data.natural_instructions: {data.natural_instructions!r} holds no task*.json files. {hint}"
            )
    entries: list[tuple[str, str]] = []
    for name in ("train_files", "validation_files"):
        for skill, paths in (getattr(data, name) or {}).items():
            entries += [(f"data.{name}[{skill!r}]", p) for p in as_list(paths)]
    for name in ("train_file", "validation_file"):
        if getattr(data, name) is not None:
            entries += [(f"data.{name}", p) for p in as_list(getattr(data, name))]
    for where, path in entries:
        if _local_path_missing(path):
            raise _missing_data(where, path, data.download)
        file_builder(path, where)
    if recipe.lm_eval is not None and recipe.lm_eval.include_path is not None:
        for path in as_list(recipe.lm_eval.include_path):
            if not os.path.exists(path):
                raise _missing_data("lm_eval.include_path", path, data.download)
    if check_graph and recipe.graph.path is not None and not os.path.isfile(recipe.graph.path):
        raise RecipeError(
            f"graph.path: {recipe.graph.path!r} not found; learn it with "
            f"`hf-skillit learn-graph {recipe.source or 'RECIPE.yaml'}` (its learn_graph: section says where it goes)"
        )
    model = recipe.model
    for where, name in (("model.name_or_path", model.name_or_path), ("model.tokenizer", model.tokenizer)):
        # A name that does not exist locally is a Hub id ("name" or "owner/name"), unless it is spelled as a path.
        if name is not None and not os.path.exists(name) and (name.startswith(("/", ".")) or name.count("/") > 1):
            raise RecipeError(f"{where}: {name!r} not found")


def file_builder(path: str, where: str) -> str:
    stem = path
    for suffix in _COMPRESSIONS:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    extension = os.path.splitext(stem)[1].lower()
    if extension not in _BUILDERS:
        raise RecipeError(f"{where}: {path!r} has an unknown format; use one of {', '.join(_BUILDERS)}")
    return _BUILDERS[extension]


def read_recipe(
    path: str | os.PathLike | None, overrides: Sequence[str] = (), raw: dict | None = None
) -> dict[str, Any]:
    """The recipe's mapping after `overrides`, its sections and their keys checked, without importing torch or
    transformers: the first step of [`load_recipe`] and of [`check_recipe`] (which `hf-skillit` runs before it
    imports anything heavy), and all there is to it for the sections `check_recipe` leaves to `load_recipe`.

    Raises:
        RecipeError: the file is missing or not YAML, an override is malformed, or a section or key is unknown.
    """
    if raw is None:
        if path is None:
            raise RecipeError("load_recipe needs a path or raw=")
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise RecipeError(f"recipe {path!r} not found")
        with open(path) as f:
            raw = load_yaml(f.read(), f"recipe {path!r}")
    raw = copy.deepcopy(raw or {})  # overrides edit it
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path!r} must be a mapping with sections {', '.join(SECTIONS)}")
    for override in overrides:
        _apply_override(raw, override)
    for section in raw:
        if section not in SECTIONS:
            raise unknown_key(section, "the recipe", list(SECTIONS))
    _check_keys_early(raw)
    return raw


def load_recipe(
    path: str | os.PathLike | None,
    overrides: Sequence[str] = (),
    raw: dict | None = None,
    check_graph: bool = True,
) -> Recipe:
    """Read, override and check a recipe, without loading data or models.

    Args:
        path: the recipe YAML file (or None with `raw`).
        overrides: `section.key=value` strings (nested: `model.tiny.hidden_size=64`); values are YAML.
        raw: the recipe as a mapping instead of a file.
        check_graph: whether `graph.path` must exist (not when the graph is about to be learned).

    Raises:
        RecipeError: unknown section or key (with the closest known key), a wrongly typed value, an inconsistent
            setting, or a local path that does not exist (with how to get the data).
    """
    raw = read_recipe(path, overrides, raw)
    _resolve_auto_bf16(raw)  # imports torch

    from transformers import TrainingArguments

    parsed: dict[str, Any] = {}
    for section in SECTIONS:
        if SECTION_TYPES[section].optional and raw.get(section) is None:
            parsed[section] = None
            continue
        cls, mapping = section_class(section), raw.get(section)
        if section == "training":  # `trainer: sft` parses it as TRL's SFTConfig with Skill-It's fields
            cls, mapping = training_class(mapping)
        if issubclass(cls, TrainingArguments):  # read as HfArgumentParser reads the same flags
            kwargs = parse_arguments_section(cls, mapping, section)
        else:
            kwargs = check_mapping(mapping, dataclass_schema(cls), section)
        parsed[section] = _construct(section, cls, kwargs)
    return _recipe(parsed, raw, path, check_graph)


def check_recipe(
    path: str | os.PathLike | None, overrides: Sequence[str] = (), raw: dict | None = None
) -> Recipe | None:
    """[`load_recipe`] without importing torch, transformers, peft or lm-eval, for the CLI's answer in a second:
    the same checks and messages for `model:` (but `model.lora`), `data:`, `graph:`, `report:` and a default
    `training:` (its values parsed by the stored copy of `HfArgumentParser`'s fields,
    `hf_skillit.recipes.training_fields`, then the Skill-It settings checked together, `hf_skillit.settings`),
    and the local paths but `graph.path` (which may be about to be learned).

    Left to `load_recipe`: `model.lora` (peft), `learn_graph:`, `lm_eval:` (None in the returned recipe), the
    checks of `TrainingArguments.__post_init__` (they import torch) and `training.bf16: auto`. The recipe's
    `training` is then a [`TrainingSettings`], not a `SkillItConfig`. None when the training section cannot be
    read without transformers: `trainer: sft` (TRL's fields), or a stored copy that does not describe this install
    (`hf_skillit.recipes.training_fields.stored_fields`).

    Raises:
        RecipeError: as `load_recipe`, for what it checks.
    """
    raw = read_recipe(path, overrides, raw)
    if recipe_trainer(raw) != "skillit" or (fields_ := stored_fields()) is None:
        return None
    parsed: dict[str, Any] = dict.fromkeys(SECTIONS)
    for section in ("model", "data", "graph", "report"):
        if SECTION_TYPES[section].optional and raw.get(section) is None:
            continue
        cls, mapping = section_class(section), raw.get(section)
        if isinstance(mapping, dict) and "lora" in mapping:  # peft's keys: left to load_recipe
            mapping = {k: v for k, v in mapping.items() if k != "lora"}
        parsed[section] = _construct(section, cls, check_mapping(mapping, dataclass_schema(cls), section))
    mapping = raw.get("training")
    if isinstance(mapping, dict) and mapping.get("bf16") == "auto":
        mapping = {**mapping, "bf16": False}  # decided by the GPU (torch): either boolean passes the same checks
    kwargs = parse_flags(mapping, "training", fields_parser(fields_), {k: f["type_name"] for k, f in fields_.items()})
    settings = TrainingSettings(**{**{name: field_["default"] for name, field_ in fields_.items()}, **kwargs})
    from .. import curriculum  # noqa: F401  (registers the curricula: the settings check knows every mixer)

    try:
        check_settings(settings)
    except ValueError as err:
        raise recipe_error(err, "training") from None
    parsed["training"] = settings
    return _recipe(parsed, raw, path, check_graph=False)


def _construct(section: str, cls: type, kwargs: dict[str, Any]) -> Any:
    """`cls(**kwargs)`, a section's dataclass on its checked keys; a `RecipeError` naming the section if a required
    key is missing or the class refuses the values."""
    required = [f.name for f in fields(cls) if f.init and f.default is MISSING and f.default_factory is MISSING]
    if missing := [name for name in required if name not in kwargs]:
        raise RecipeError(f"{section}.{missing[0]} is required")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        raise recipe_error(err, section) from None


def _recipe(parsed: dict[str, Any], raw: dict[str, Any], path: str | os.PathLike | None, check_graph: bool) -> Recipe:
    if parsed["training"].graph_path is not None:
        raise RecipeError("training.graph_path: set graph.path instead (the recipe checks the graph against the data)")
    recipe = Recipe(**parsed, raw=raw, source=None if path is None else os.fspath(path))
    _check_paths(recipe, check_graph)
    return recipe
