"""Recipes: one YAML file describing a Skill-It run, parsed into dataclasses and checked before any training.

A recipe has these sections, each parsed into a dataclass in the style of `HfArgumentParser`:

- `model:` [`ModelArguments`]: a checkpoint (`name_or_path`, loaded with `AutoModelForCausalLM.from_pretrained`),
  a pretrained base that needs no hub (`pretrained: smollm2-135m` or a local .gguf, `hf_skillit.pretrained`),
  or a `tiny:` config for `hf_skillit.synthetic.tiny_model_config`; optional `lora:` (peft `LoraConfig` kwargs).
- `data:` [`DataArguments`]: a synthetic task (`synthetic: lego | addition`), or the user's files (one file per
  skill, or one file with a skill column), or a Super-NaturalInstructions checkout.
- `graph:` [`GraphArguments`]: a graph JSON file, the LEGO reasoning graph built in code, an inline matrix, or none.
- `training:` [`SkillItConfig`] fields.
- `learn_graph:` (optional) [`GraphLearningArguments`]: how `hf-skillit learn-graph` learns the graph.
- `lm_eval:` (optional) `hf_skillit.lm_eval_hooks.LMEvalArguments`: lm-eval tasks as evaluation skills.

`load_recipe` reads the file, applies `section.key=value` overrides, rejects unknown keys (with a did-you-mean)
and wrongly typed values, and checks that every local path exists; `build` loads data, graph and model and checks
that they fit together; `run` trains and reports. Relative paths are relative to the working directory.
"""

from __future__ import annotations

import copy
import difflib
import glob
import inspect
import json
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from enum import Enum
from typing import Any, Literal, NamedTuple

import datasets
import numpy as np
import yaml

from .config import SkillItConfig
from .graph import SkillsGraph
from .plotting import GRAPH_JSON, plot_run
from .skills import SkillSet
from .synthetic import (
    addition_skills,
    answer_accuracy,
    build_tokenizer,
    encode,
    fold_skills,
    lego_parent,
    lego_skills,
    make_addition,
    make_fold,
    make_lego,
    make_tiny_model,
    tiny_model_config,
)
from .trainer import TRAJECTORY_NAME, SkillItTrainer, last_complete_checkpoint

__all__ = [
    "DataArguments",
    "GraphArguments",
    "GraphLearningArguments",
    "ModelArguments",
    "Recipe",
    "RecipeError",
    "RunParts",
    "build",
    "graph_learning_kwargs",
    "lego_reasoning_graph",
    "load_natural_instructions",
    "load_recipe",
    "make_trainer",
    "run",
]

RECIPE_NAME = "recipe.yaml"
SUMMARY_NAME = "summary.json"
SYNTHETIC_TASKS = ("lego", "addition", "fold")
SNI_SKILL_CHOICES = ("category", "category_language")
SNI_URL = "https://github.com/allenai/natural-instructions"
# `datasets` builders for local files, by extension; compressed files keep the builder of their inner extension.
_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")


class RecipeError(ValueError):
    """A recipe that cannot run: unknown key, wrong type, missing file, names that do not match."""


# ----- YAML --------------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """`SafeLoader` that reads `1e-3` as a float: YAML 1.1 (PyYAML) needs a dot and would return the string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _yaml_load(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        raise RecipeError(f"{where} is not valid YAML: {' '.join(str(err).split())}") from None


# ----- type checking ------------------------------------------------------------------------------------------


class _Mismatch(Exception):
    pass


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any value"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple, Sequence):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return "mapping"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "one of " + ", ".join(repr(e.value) for e in tp)
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any) -> Any:
    """`value` if it has type `tp` (ints count as floats, numbers as names), else raise `_Mismatch`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or isinstance(tp, typing.TypeVar):
        return value
    if origin in (typing.Union, types.UnionType):
        # Exact matches first, so that e.g. `int | str` keeps 3 an int.
        for arg in args:
            if _accepts(value, arg):
                return value
        for arg in args:
            try:
                return _convert(value, arg)
            except _Mismatch:
                pass
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return value
        raise _Mismatch
    if origin is Literal:
        if value in args:
            return value
        raise _Mismatch
    if origin in (list, tuple, Sequence) or tp is list:
        if not isinstance(value, list):
            raise _Mismatch
        return [_convert(v, args[0]) for v in value] if args else value
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, dict):
            raise _Mismatch
        if len(args) == 2:
            return {_convert(k, args[0]): _convert(v, args[1]) for k, v in value.items()}
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        # Skill names such as LEGO's "3" read as YAML ints.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch
    if isinstance(tp, type) and issubclass(tp, Enum):
        if isinstance(value, tp) or value in {e.value for e in tp}:
            return value
        raise _Mismatch
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    return value  # a typing construct without a YAML counterpart: left to the consumer to check


def _accepts(value: Any, tp: Any) -> bool:
    try:
        return _convert(value, tp) is value
    except _Mismatch:
        return False


def _unknown_key(key: object, where: str, known: Sequence[str]) -> RecipeError:
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"
    if not close and len(known) > 30:
        hint = "see `hf_skillit.SkillItConfig` / `transformers.TrainingArguments` for the known keys"
    return RecipeError(f"unknown key {key!r} in {where}; {hint}")


def _check_mapping(raw: Any, schema: Mapping[str, Any], where: str) -> dict[str, Any]:
    """`raw` checked against `schema` (key -> type): unknown keys and wrong types raise `RecipeError`."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{where} must be a mapping of key: value, got {type(raw).__name__}")
    checked = {}
    for key, value in raw.items():
        if key not in schema:
            raise _unknown_key(key, where, list(schema))
        try:
            checked[key] = _convert(value, schema[key])
        except _Mismatch:
            raise RecipeError(
                f"{where}.{key} must be {_type_name(schema[key])}, got {value!r} ({type(value).__name__})"
            ) from None
    return checked


def _dataclass_schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in fields(cls) if f.init and not f.name.startswith("_")}


def _signature_schema(fn: Callable, exclude: Sequence[str] = ()) -> dict[str, Any]:
    hints = typing.get_type_hints(fn)
    return {
        name: hints.get(name, Any)
        for name, p in inspect.signature(fn).parameters.items()
        if name not in exclude and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


# ----- sections -----------------------------------------------------------------------------------------------


def _tiny_schema() -> dict[str, Any]:
    return {**_signature_schema(tiny_model_config, exclude=("vocab_size", "tokenizer")), "seed": int}


def _lora_schema() -> dict[str, Any]:
    from peft import LoraConfig

    return _dataclass_schema(LoraConfig)


def _generator(task: str) -> Callable[..., datasets.Dataset]:
    return {"lego": make_lego, "addition": make_addition, "fold": make_fold}[task]


@dataclass
class ModelArguments:
    """`model:` section: the model to train and its tokenizer."""

    name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or local directory of a causal LM, loaded with AutoModelForCausalLM.from_pretrained."
        },
    )
    pretrained: str | None = field(
        default=None,
        metadata={
            "help": "A pretrained base installed without the hub (hf_skillit.pretrained): a known name "
            "(smollm2-135m), a local .gguf file or model folder; fetched and converted once on first use."
        },
    )
    revision: str | None = field(default=None, metadata={"help": "Hub revision of name_or_path."})
    dtype: str | None = field(
        default=None, metadata={"help": "Weights dtype for from_pretrained: auto, float32, bfloat16, float16."}
    )
    tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "Tokenizer (hub id or directory). Default: name_or_path's, or for a tiny model the local "
            "word-level tokenizer of the synthetic tasks."
        },
    )
    tiny: dict[str, Any] | None = field(
        default=None,
        metadata={"help": "A from-scratch model: kwargs of hf_skillit.synthetic.tiny_model_config, plus seed."},
    )
    lora: dict[str, Any] | None = field(
        default=None, metadata={"help": "Wrap the model with peft LoRA: LoraConfig kwargs (task_type is CAUSAL_LM)."}
    )

    def __post_init__(self) -> None:
        given = [name for name in ("name_or_path", "pretrained", "tiny") if getattr(self, name) is not None]
        if len(given) != 1:
            raise RecipeError(
                "model: give exactly one of name_or_path (a checkpoint), pretrained (a base installed without the "
                "hub) and tiny (a from-scratch model)" + (f"; got {', '.join(given)}" if given else "")
            )
        if self.pretrained is not None:
            from .pretrained import KNOWN_MODELS

            if self.pretrained not in KNOWN_MODELS and not os.path.exists(self.pretrained):
                raise RecipeError(
                    f"model.pretrained: {self.pretrained!r} is neither a known name ({', '.join(KNOWN_MODELS)}) "
                    "nor a local .gguf file or model folder"
                )
        if self.tiny is not None:
            self.tiny = _check_mapping(self.tiny, _tiny_schema(), "model.tiny")
        if self.lora is not None:
            self.lora = _check_mapping(self.lora, _lora_schema(), "model.lora")

    def checkpoint(self) -> str | None:
        """The folder or hub id to load: `name_or_path`, or `pretrained` fetched and converted (once)."""
        if self.pretrained is None:
            return self.name_or_path
        from .pretrained import fetch_model

        return str(fetch_model(self.pretrained))


@dataclass
class DataArguments:
    """`data:` section: the skills' training and validation data. Exactly one source: `synthetic`,
    `train_files` (one entry per skill), `train_file` (one table with `skill_column`) or `natural_instructions`."""

    synthetic: str | None = field(default=None, metadata={"help": "Synthetic task: lego, addition or fold."})
    generator: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Kwargs of make_lego (k, structure, proportions) or make_addition (digits, proportions, reverse)."
        },
    )
    num_train_samples: int = field(default=30000, metadata={"help": "Synthetic: training rows generated in all."})
    validation_per_skill: int = field(
        default=100,
        metadata={
            "help": "Validation rows per skill (paper: 100 for LEGO/addition): generated for synthetic tasks, held out "
            "of each skill's training rows for user data without validation files."
        },
    )
    answer_only: bool = field(
        default=True, metadata={"help": "Synthetic: score the loss on the answer token only (else on every token)."}
    )
    train_files: dict[str, str | list[str]] | None = field(
        default=None, metadata={"help": "skill -> local file(s) or glob(s): jsonl, json, parquet, csv or txt."}
    )
    validation_files: dict[str, str | list[str]] | None = field(
        default=None, metadata={"help": "skill -> local validation file(s); may name evaluation-only skills."}
    )
    train_file: str | list[str] | None = field(
        default=None, metadata={"help": "Local file(s) holding every skill's rows, with a skill_column."}
    )
    validation_file: str | list[str] | None = field(
        default=None, metadata={"help": "Local validation file(s) with a skill_column."}
    )
    skill_column: str = field(default="skill", metadata={"help": "Column naming each row's skill (train_file)."})
    natural_instructions: str | None = field(
        default=None,
        metadata={"help": f"The tasks/ directory of a Super-NaturalInstructions checkout ({SNI_URL})."},
    )
    sni_skill: str = field(
        default="category",
        metadata={
            "help": "Natural Instructions skills: category, or category_language (e.g. question_generation_spanish)."
        },
    )
    max_samples_per_task: int | None = field(
        default=None, metadata={"help": "Natural Instructions: at most this many instances per task."}
    )
    skills: list[str] | None = field(
        default=None,
        metadata={
            "help": "The training skills, in order; rows of other skills are dropped. Default: all, in data order."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the synthetic data and of held-out validation rows."})
    download: str | None = field(
        default=None, metadata={"help": "How to get the data; shown when a data path is missing."}
    )

    def __post_init__(self) -> None:
        sources = [
            name
            for name in ("synthetic", "train_files", "train_file", "natural_instructions")
            if getattr(self, name) is not None
        ]
        if len(sources) != 1:
            raise RecipeError(
                "data: give exactly one of synthetic, train_files, train_file, natural_instructions"
                + (f" (got {', '.join(sources)})" if sources else "")
            )
        if self.synthetic is not None:
            if self.synthetic not in SYNTHETIC_TASKS:
                raise RecipeError(
                    f"data.synthetic must be one of {', '.join(SYNTHETIC_TASKS)}, got {self.synthetic!r}"
                )
            schema = _signature_schema(_generator(self.synthetic), exclude=("n", "seed"))
            self.generator = _check_mapping(self.generator, schema, "data.generator")
        elif self.generator is not None:
            raise RecipeError("data.generator is only for synthetic data")
        if self.sni_skill not in SNI_SKILL_CHOICES:
            raise RecipeError(f"data.sni_skill must be one of {', '.join(SNI_SKILL_CHOICES)}, got {self.sni_skill!r}")
        for name in ("num_train_samples", "validation_per_skill", "max_samples_per_task"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RecipeError(f"data.{name} must be >= 1, got {value}")
        if self.validation_files is not None and self.train_files is None:
            raise RecipeError("data.validation_files goes with train_files (use validation_file with train_file)")
        if self.validation_file is not None and self.train_file is None:
            raise RecipeError("data.validation_file goes with train_file (use validation_files with train_files)")

    @property
    def synthetic_skills(self) -> list[str]:
        generator = self.generator or {}
        if self.synthetic == "lego":
            return lego_skills(generator.get("k", 5))
        if self.synthetic == "fold":
            return fold_skills(generator.get("digits", 4))
        return addition_skills(generator.get("digits", 3))


@dataclass
class GraphArguments:
    """`graph:` section: the skills graph, from one of `path`, `reasoning` or `matrix`. None at all is fine for the
    random, stratified, no_graph and fixed mixtures."""

    path: str | None = field(default=None, metadata={"help": "Skills graph JSON, as written by SkillsGraph.save."})
    reasoning: str | None = field(
        default=None,
        metadata={
            "help": "LEGO only: the reasoning graph built in code, chain or tree (diagonal 1, parent -> child edge)."
        },
    )
    edge_weight: float = field(default=0.5, metadata={"help": "Weight of a reasoning edge parent -> child."})
    matrix: list[list[float]] | None = field(
        default=None, metadata={"help": "A hand-written graph: rows = training skills, columns = evaluation skills."}
    )
    train_skills: list[str] | None = field(
        default=None, metadata={"help": "Row names of matrix (default: the data's training skills, in order)."}
    )
    eval_skills: list[str] | None = field(
        default=None, metadata={"help": "Column names of matrix (default: train_skills)."}
    )

    def __post_init__(self) -> None:
        given = [name for name in ("path", "reasoning", "matrix") if getattr(self, name) is not None]
        if len(given) > 1:
            raise RecipeError(f"graph: give one of path, reasoning, matrix (got {', '.join(given)})")
        if self.reasoning is not None and self.reasoning not in ("chain", "tree"):
            raise RecipeError(f"graph.reasoning must be chain or tree, got {self.reasoning!r}")
        if self.matrix is None and (self.train_skills is not None or self.eval_skills is not None):
            raise RecipeError("graph.train_skills and graph.eval_skills name the rows and columns of graph.matrix")


@dataclass
class GraphLearningArguments:
    """`learn_graph:` section: how `hf-skillit learn-graph` learns the graph (`hf_skillit.graph_learning.learn_graph`).

    Every run trains the recipe's model from its starting point with the recipe's `training` settings (learning
    rate, batch size...), for `steps` steps on one skill or a balanced pair of skills.
    """

    output_dir: str | None = field(
        default=None, metadata={"help": "Where runs and graph.json go. Default: training.output_dir + '_graph'."}
    )
    method: str = field(
        default="brute_force", metadata={"help": "brute_force (Algorithm 2) or approximate (Algorithm 3)."}
    )
    steps: int | None = field(default=None, metadata={"help": "Steps H of each run. Default: training.max_steps."})
    eval_every: int | None = field(
        default=None, metadata={"help": "Steps between two validation losses of a run (must divide steps)."}
    )
    edge_rule: str | None = field(
        default=None,
        metadata={"help": "delta, delta_diff, positive or lego (see learn_graph). Default: the method's."},
    )
    target_loss: float | None = field(default=None, metadata={"help": "Loss the lego rule counts steps to (0.01)."})
    diagonal: float | None = field(default=None, metadata={"help": "Set every A_jj to this (paper LEGO: 1)."})
    measure_at: int | None = field(
        default=None, metadata={"help": "Step at which loss changes are read (paper NI: 100 of 600)."}
    )
    eval_skills: list[str] | None = field(default=None, metadata={"help": "Graph columns. Default: learn_graph's."})
    num_shards: int = field(default=1, metadata={"help": "Split the runs over this many processes..."})
    shard_index: int = field(default=0, metadata={"help": "...and train this one's share of them."})

    def __post_init__(self) -> None:
        from .graph_learning import EDGE_RULES, METHODS

        if self.method not in METHODS:
            raise RecipeError(f"learn_graph.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.edge_rule is not None and self.edge_rule not in EDGE_RULES:
            raise RecipeError(f"learn_graph.edge_rule must be one of {', '.join(EDGE_RULES)}, got {self.edge_rule!r}")
        if (self.edge_rule == "lego") != (self.target_loss is not None):
            raise RecipeError("learn_graph.target_loss goes with edge_rule: lego, and edge_rule: lego needs it")
        # These rules compare pair runs with single runs, which only Algorithm 2 trains.
        if self.method == "approximate" and self.edge_rule in ("delta_diff", "lego"):
            raise RecipeError(f"learn_graph.edge_rule {self.edge_rule} needs method: brute_force")


SECTIONS = ("model", "data", "graph", "training", "learn_graph", "lm_eval")


def _section_class(name: str) -> type:
    if name == "lm_eval":
        from .lm_eval_hooks import LMEvalArguments  # imports lm-eval: only for recipes that use it

        return LMEvalArguments
    return {
        "model": ModelArguments,
        "data": DataArguments,
        "graph": GraphArguments,
        "training": SkillItConfig,
        "learn_graph": GraphLearningArguments,
    }[name]


@dataclass
class Recipe:
    """A parsed, checked recipe. `raw` is the YAML mapping after overrides (written into the run directory)."""

    model: ModelArguments
    data: DataArguments
    graph: GraphArguments
    training: SkillItConfig
    learn_graph: GraphLearningArguments
    lm_eval: Any  # hf_skillit.lm_eval_hooks.LMEvalArguments, or None
    raw: dict[str, Any]
    source: str | None = None


# ----- loading ------------------------------------------------------------------------------------------------


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    path = key.strip().split(".")
    if not sep or len(path) < 2 or not all(path):
        raise RecipeError(f"override {override!r} must look like section.key=value (e.g. training.max_steps=60)")
    value = _yaml_load(text, f"the value of override {override!r}")
    node = raw
    for depth, part in enumerate(path[:-1]):
        if depth == 0 and part not in SECTIONS:
            raise _unknown_key(part, "the recipe", list(SECTIONS))
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            raise RecipeError(f"override {override!r}: {'.'.join(path[: depth + 1])} is not a mapping")
        node = node[part]
    node[path[-1]] = value


def _resolve_auto_bf16(raw: dict[str, Any]) -> None:
    """`training.bf16: auto`: bf16 mixed precision where a GPU supports it, float32 elsewhere (the CPU)."""
    training = raw.get("training")
    if isinstance(training, dict) and training.get("bf16") == "auto":
        import torch

        training["bf16"] = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _local_path_missing(path: str) -> bool:
    return not (glob.glob(path) if glob.has_magic(path) else os.path.exists(path))


def _as_list(paths: str | list[str]) -> list[str]:
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
            entries += [(f"data.{name}[{skill!r}]", p) for p in _as_list(paths)]
    for name in ("train_file", "validation_file"):
        if getattr(data, name) is not None:
            entries += [(f"data.{name}", p) for p in _as_list(getattr(data, name))]
    for where, path in entries:
        if _local_path_missing(path):
            raise _missing_data(where, path, data.download)
        _builder(path, where)
    if recipe.lm_eval is not None and recipe.lm_eval.include_path is not None:
        for path in _as_list(recipe.lm_eval.include_path):
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


def _builder(path: str, where: str) -> str:
    stem = path
    for suffix in _COMPRESSIONS:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    extension = os.path.splitext(stem)[1].lower()
    if extension not in _BUILDERS:
        raise RecipeError(f"{where}: {path!r} has an unknown format; use one of {', '.join(_BUILDERS)}")
    return _BUILDERS[extension]


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
    if raw is None:
        if path is None:
            raise RecipeError("load_recipe needs a path or raw=")
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise RecipeError(f"recipe {path!r} not found")
        with open(path) as f:
            raw = _yaml_load(f.read(), f"recipe {path!r}")
    raw = copy.deepcopy(raw or {})  # overrides edit it
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path!r} must be a mapping with sections {', '.join(SECTIONS)}")
    for override in overrides:
        _apply_override(raw, override)
    _resolve_auto_bf16(raw)
    for section in raw:
        if section not in SECTIONS:
            raise _unknown_key(section, "the recipe", list(SECTIONS))

    parsed: dict[str, Any] = {}
    for section in SECTIONS:
        if section == "lm_eval" and raw.get(section) is None:
            parsed[section] = None
            continue
        cls = _section_class(section)
        kwargs = _check_mapping(raw.get(section), _dataclass_schema(cls), section)
        required = [f.name for f in fields(cls) if f.init and f.default is MISSING and f.default_factory is MISSING]
        if missing := [name for name in required if name not in kwargs]:
            raise RecipeError(f"{section}.{missing[0]} is required")
        try:
            parsed[section] = cls(**kwargs)
        except RecipeError:
            raise
        except (ValueError, TypeError) as err:
            raise RecipeError(f"{section}: {err}") from None
    if parsed["training"].graph_path is not None:
        raise RecipeError("training.graph_path: set graph.path instead (the recipe checks the graph against the data)")
    recipe = Recipe(**parsed, raw=raw, source=None if path is None else os.fspath(path))
    _check_paths(recipe, check_graph)
    return recipe


# ----- data ---------------------------------------------------------------------------------------------------


def _load_files(paths: str | list[str], where: str) -> datasets.Dataset:
    files = _as_list(paths)
    builders = {_builder(p, where) for p in files}
    if len(builders) > 1:
        raise RecipeError(f"{where}: files of different formats cannot be read together: {files}")
    return datasets.load_dataset(builders.pop(), data_files=files, split="train")


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


def _synthetic_skills(data: DataArguments, tokenizer) -> tuple[SkillSet, int]:
    """The synthetic task's SkillSet (encoded) and its sequence length."""
    generate = _generator(data.synthetic)
    kwargs = dict(data.generator or {})
    names = data.synthetic_skills
    if data.skills is not None and (unknown := [s for s in data.skills if s not in names]):
        raise RecipeError(f"data.skills: {unknown} are not skills of {data.synthetic} (skills: {names})")
    train = generate(data.num_train_samples, seed=data.seed, **kwargs)
    # Validation is balanced whatever the training proportions, from its own seed, without rows seen in training.
    validation_kwargs = {k: v for k, v in kwargs.items() if k != "proportions"}
    validation = generate(data.validation_per_skill * len(names), seed=data.seed + 1, **validation_kwargs)
    seen = set(validation["text"])
    train = train.filter(lambda batch: [t not in seen for t in batch["text"]], batched=True)
    train, validation = (
        encode(ds.map(_space_answers, batched=True), tokenizer, answer_only=data.answer_only)
        for ds in (train, validation)
    )
    present = set(train["skill"])
    order = [s for s in (data.skills or names) if s in present]
    if data.skills is not None:
        keep = set(order)
        train = train.filter(lambda batch: [s in keep for s in batch["skill"]], batched=True)
        validation = validation.filter(lambda batch: [s in keep for s in batch["skill"]], batched=True)
    skills = SkillSet.from_column(train, column="skill", validation=validation, order=order)
    return skills, max(len(train[0]["input_ids"]), len(validation[0]["input_ids"]))


def _user_skills(data: DataArguments) -> SkillSet:
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
    train = {s: _load_files(data.train_files[s], f"data.train_files[{s!r}]") for s in order}
    if data.validation_files is not None:
        validation = {s: _load_files(p, f"data.validation_files[{s!r}]") for s, p in data.validation_files.items()}
        return SkillSet(train, validation)
    return SkillSet.from_dict(train, validation=data.validation_per_skill, seed=data.seed)


# ----- graph and model ----------------------------------------------------------------------------------------


def lego_reasoning_graph(skills: Sequence[str], structure: str = "chain", edge_weight: float = 0.5) -> SkillsGraph:
    """The LEGO reasoning graph over LEGO skills ("1".."k"): 1 on the diagonal, `edge_weight` from each variable's
    parent to it (chain: i -> i+1; tree: i // 2 -> i). The hand-made default until a learned graph is given."""
    index = {name: i for i, name in enumerate(skills)}
    matrix = np.eye(len(skills))
    for name in skills:
        parent = lego_parent(int(name), structure)
        if parent is not None and str(parent) in index:
            matrix[index[str(parent)], index[name]] = edge_weight
    return SkillsGraph(matrix, skills, metadata={"method": f"lego_{structure}", "edge_weight": edge_weight})


def _build_graph(recipe: Recipe, skills: SkillSet, evaluators: Sequence[Any] = ()) -> SkillsGraph | None:
    args, data, training = recipe.graph, recipe.data, recipe.training
    graph = None
    if args.reasoning is not None:
        if data.synthetic != "lego":
            raise RecipeError("graph.reasoning is the LEGO reasoning graph: it needs data.synthetic: lego")
        graph = lego_reasoning_graph(skills.train_skills, args.reasoning, args.edge_weight)
    elif args.path is not None or args.matrix is not None:
        where = f"graph.path {args.path!r}" if args.path is not None else "graph.matrix"
        try:
            if args.path is not None:
                graph = SkillsGraph.load(args.path)
            else:
                graph = SkillsGraph(args.matrix, args.train_skills or skills.train_skills, args.eval_skills)
        except ValueError as err:
            raise RecipeError(f"{where}: {err}") from None
        missing = [s for s in skills.train_skills if s not in graph.train_skills]
        extra = [s for s in graph.train_skills if s not in skills.train_skills]
        if missing or extra:
            raise RecipeError(
                f"{where} does not match the data's training skills: "
                f"not in the graph {missing}, in the graph but not in the data {extra}"
            )
    if graph is None and training.mixing in ("skill_it", "static"):
        raise RecipeError(
            f"training.mixing={training.mixing!r} needs a skills graph: set graph.path, graph.matrix or (LEGO) "
            "graph.reasoning, "
            "or use mixing no_graph, stratified, random or fixed"
        )
    evaluable = list(skills.eval_skills) + [s for e in evaluators for s in e.skills]
    if graph is not None and (no_data := [s for s in graph.eval_skills if s not in evaluable]):
        raise RecipeError(
            f"the graph's evaluation skill(s) {no_data} have neither validation data nor an lm_eval task "
            f"(evaluation skills: {evaluable})"
        )
    for target in training.target_skills or []:
        known = graph.eval_skills if graph is not None else evaluable
        if target not in known:
            close = difflib.get_close_matches(target, list(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise RecipeError(
                f"training.target_skills: unknown skill {target!r}; {hint}evaluation skills: {list(known)}"
            )
    return graph


def _load_tokenizer(args: ModelArguments):
    name = args.tokenizer or args.checkpoint()
    if name is None:
        return build_tokenizer()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name, revision=args.revision if name == args.name_or_path else None)
    if tokenizer.pad_token is None:
        # Causal LM tokenizers often have no pad token; padding positions are masked out of the loss anyway.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_model(args: ModelArguments, tokenizer, seq_len: int | None):
    if args.tiny is not None:
        kwargs = dict(args.tiny)
        seed = kwargs.pop("seed", 0)
        # Positions past the table would fail mid-training: size it for the data unless told otherwise.
        kwargs.setdefault("max_position_embeddings", max(64, seq_len or 0))
        model = make_tiny_model(tiny_model_config(tokenizer=tokenizer, **kwargs), seed=seed)
    else:
        from transformers import AutoModelForCausalLM

        kwargs = {"revision": args.revision}
        if args.dtype is not None:
            kwargs["dtype"] = args.dtype
        model = AutoModelForCausalLM.from_pretrained(args.checkpoint(), **kwargs)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    if args.lora is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(**{"task_type": "CAUSAL_LM", **args.lora}))
    return model


class RunParts(NamedTuple):
    """What `build` returns: everything `SkillItTrainer` needs."""

    model: Any
    tokenizer: Any
    skills: SkillSet
    graph: SkillsGraph | None
    config: SkillItConfig
    evaluators: Sequence[Any] = ()  # lm-eval tasks as evaluation skills (the recipe's lm_eval: section)


def _evaluators(recipe: Recipe, tokenizer) -> list:
    if recipe.lm_eval is None:
        return []
    try:
        return [recipe.lm_eval.skills(tokenizer)]
    except RuntimeError as err:  # a task whose dataset cannot be loaded: the message says what to download
        raise RecipeError(f"lm_eval: {err}") from None


def _data(recipe: Recipe):
    """The tokenizer, the SkillSet and the sequence length of the recipe's data."""
    tokenizer = _load_tokenizer(recipe.model)
    if recipe.data.synthetic is not None:
        skills, seq_len = _synthetic_skills(recipe.data, tokenizer)
        return tokenizer, skills, seq_len
    if recipe.model.tiny is not None and recipe.model.tokenizer is None:
        raise RecipeError(
            "model.tiny with user data needs model.tokenizer: the built-in tokenizer only knows the synthetic tasks"
        )
    return tokenizer, _user_skills(recipe.data), recipe.training.max_length


def build(recipe: Recipe) -> RunParts:
    """Load the recipe's data, lm-eval tasks, graph, tokenizer and model, checking that data, graph and targets fit
    together before the (possibly large) model is loaded."""
    tokenizer, skills, seq_len = _data(recipe)
    evaluators = _evaluators(recipe, tokenizer)
    graph = _build_graph(recipe, skills, evaluators)
    model = _load_model(recipe.model, tokenizer, seq_len)
    return RunParts(model, tokenizer, skills, graph, recipe.training, evaluators)


def graph_learning_kwargs(recipe: Recipe) -> dict[str, Any]:
    """The keyword arguments of `hf_skillit.graph_learning.learn_graph` for the recipe's `learn_graph:` section,
    with the recipe's data loaded and the settings checked (so mistakes show before the first run trains)."""
    args = recipe.learn_graph
    steps = args.steps or recipe.training.max_steps
    eval_every = args.eval_every or steps
    if steps % eval_every:
        raise RecipeError(f"learn_graph.eval_every={eval_every} does not divide learn_graph.steps={steps}")
    if args.measure_at is not None and (args.measure_at > steps or args.measure_at % eval_every):
        raise RecipeError(
            f"learn_graph.measure_at={args.measure_at} must be a multiple of eval_every={eval_every} up to {steps}"
        )
    tokenizer, skills, seq_len = _data(recipe)
    return {
        "skills": skills,
        "evaluators": _evaluators(recipe, tokenizer),
        "model_init": lambda: _load_model(recipe.model, tokenizer, seq_len),
        "output_dir": args.output_dir or recipe.training.output_dir.rstrip("/") + "_graph",
        "steps": steps,
        "method": args.method,
        "eval_skills": args.eval_skills,
        "eval_every": eval_every,
        "edge_rule": args.edge_rule,
        "target_loss": args.target_loss,
        "diagonal": args.diagonal,
        "measure_at": args.measure_at,
        "args": recipe.training,
        "processing_class": tokenizer,
        "num_shards": args.num_shards,
        "shard_index": args.shard_index,
        "model_description": recipe.model.name_or_path or recipe.model.pretrained or f"tiny {recipe.model.tiny}",
    }


# ----- running ------------------------------------------------------------------------------------------------


def _check_output_dir(config: SkillItConfig, resume: bool) -> None:
    if resume:
        if last_complete_checkpoint(config.output_dir) is None:
            raise RecipeError(f"--resume: no complete checkpoint in {config.output_dir!r}")
        return
    if os.path.exists(os.path.join(config.output_dir, TRAJECTORY_NAME)) and not config.overwrite_output_dir:
        raise RecipeError(
            f"training.output_dir {config.output_dir!r} holds another run ({TRAJECTORY_NAME}); continue it with "
            "--resume, choose another output_dir, or --set training.overwrite_output_dir=true"
        )


def make_trainer(recipe: Recipe, resume: bool = False) -> SkillItTrainer:
    """Check the output directory, `build` the recipe, and return its `SkillItTrainer` (not yet trained)."""
    _check_output_dir(recipe.training, resume)
    parts = build(recipe)
    trainer = SkillItTrainer(
        model=parts.model,
        args=parts.config,
        skills=parts.skills,
        graph=parts.graph,
        evaluators=parts.evaluators,
        processing_class=parts.tokenizer,
    )
    if parts.evaluators and (callback := recipe.lm_eval.callback(trainer, parts.evaluators[0])) is not None:
        trainer.add_callback(callback)
    return trainer


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
