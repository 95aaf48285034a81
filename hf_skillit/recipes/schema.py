"""Recipe schema: YAML reading and the type checker that turns a section's mapping into checked keyword arguments.

The `training:` section, a `transformers.TrainingArguments`, is read by `HfArgumentParser`
(`parse_arguments_section`): a recipe's values mean what the same command-line flags mean. The other sections
(nested mappings, lists of lists, unions that argparse cannot express) go through the type checker: a section's
schema is its dataclass's fields (`dataclass_schema`) or a function's parameters (`signature_schema`), key -> type,
and `check_mapping` rejects unknown keys (with a did-you-mean) and wrongly typed values, converting what YAML cannot
say (ints as floats, numbers as skill names). Every error is a [`RecipeError`] naming the key.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "RecipeError",
    "check_mapping",
    "dataclass_field_names",
    "dataclass_schema",
    "load_yaml",
    "parse_arguments_section",
    "parse_flags",
    "recipe_error",
    "signature_schema",
    "unknown_key",
]


class RecipeError(ValueError):
    """A recipe that cannot run: unknown key, wrong type, missing file, names that do not match."""


def recipe_error(err: Exception, where: str) -> RecipeError:
    """`err`, raised by a library check, as a `RecipeError` about `where` (a section or key of the recipe).

    An error may carry its own `recipe_message`, worded with the recipe's keys (see
    `hf_skillit.graph_edges.GraphSettingsError`); otherwise the message is prefixed with `where`.
    """
    if isinstance(err, RecipeError):
        return err
    return RecipeError(getattr(err, "recipe_message", None) or f"{where}: {err}")


# ----- YAML --------------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """`SafeLoader` that reads `1e-3` as a float: YAML 1.1 (PyYAML) needs a dot and would return the string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str, where: str) -> Any:
    """Parse YAML text; a `RecipeError` naming `where` if it is not valid YAML."""
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


def unknown_key(key: object, where: str, known: Sequence[str]) -> RecipeError:
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"
    if not close and len(known) > 30:
        hint = "see `hf_skillit.SkillItConfig` / `transformers.TrainingArguments` for the known keys"
    return RecipeError(f"unknown key {key!r} in {where}; {hint}")


def check_mapping(raw: Any, schema: Mapping[str, Any], where: str) -> dict[str, Any]:
    """`raw` checked against `schema` (key -> type): unknown keys and wrong types raise `RecipeError`."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{where} must be a mapping of key: value, got {type(raw).__name__}")
    checked = {}
    for key, value in raw.items():
        if key not in schema:
            raise unknown_key(key, where, list(schema))
        try:
            checked[key] = _convert(value, schema[key])
        except _Mismatch:
            raise RecipeError(
                f"{where}.{key} must be {_type_name(schema[key])}, got {value!r} ({type(value).__name__})"
            ) from None
    return checked


# The words YAML 1.1 (PyYAML) reads as booleans, in the order a choice is looked for among them.
_YAML_BOOLEAN_WORDS = {False: ("no", "false", "off"), True: ("yes", "true", "on")}


def _yaml_word(value: bool, choices: Sequence[Any], where: str) -> str:
    """The choice a YAML boolean stands for: `save_strategy: no` is read by YAML as False, but a choice field takes
    no boolean, so the user meant the word, as `--save_strategy no` on transformers' command line means the
    strategy "no". A RecipeError naming the fix when no choice is such a word."""
    words = [str(c) for c in choices if str(c).lower() in _YAML_BOOLEAN_WORDS[value]]
    if len(words) == 1:
        return words[0]
    word = _YAML_BOOLEAN_WORDS[value][0]
    raise RecipeError(
        f"{where}: {value!r} is not a choice; choices: {', '.join(map(str, choices))}. YAML reads an unquoted "
        f'yes/no/on/off/true/false as a boolean: quote the word you mean ({where.split(".")[-1]}: "{word}" in '
        f"the recipe, --set '{where}=\"{word}\"')"
    )


def parse_arguments_section(cls: type, raw: Any, where: str) -> dict[str, Any]:
    """The keyword arguments of `cls` (a `transformers.TrainingArguments`, e.g. `SkillItConfig`) from a section's
    mapping, converted by `HfArgumentParser` exactly as the same settings given as command-line flags would be
    (`--max_steps 60 --mixing skill_it`): its types, `choices` and boolean spellings decide what a value may be.
    See [`parse_flags`]."""
    from transformers import HfArgumentParser

    type_names = {key: _type_name(tp) for key, tp in dataclass_schema(cls).items()}
    return parse_flags(raw, where, HfArgumentParser(cls, exit_on_error=False), type_names)


def parse_flags(raw: Any, where: str, parser: Any, type_names: Mapping[str, str]) -> dict[str, Any]:
    """A section's mapping read by `parser` (`HfArgumentParser`, or the same flags rebuilt without torch by
    `hf_skillit.recipes.training_fields`), whose keys are `type_names` (key -> the type named in errors).

    Unknown keys get a did-you-mean, wrong values a message naming the key and the type (or the closest choice).
    Lists and mappings for fields that take them as Python values, not as flags (`report_to: [tensorboard]`,
    `fixed_weights: {...}`, `lr_scheduler_kwargs: {...}`), and nulls, go to the dataclass unchanged; it checks them.
    """
    import argparse

    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{where} must be a mapping of key: value, got {type(raw).__name__}")
    argv: list[str] = []
    unchanged: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in type_names:
            raise unknown_key(key, where, list(type_names))
        action = parser._option_string_actions[f"--{key}"]
        takes_list = action.nargs in ("+", "*")
        if isinstance(value, bool) and action.choices is not None:
            value = _yaml_word(value, action.choices, f"{where}.{key}")
        if value is None or (isinstance(value, (list, dict)) and not takes_list and action.type is str):
            unchanged[key] = value
        elif isinstance(value, list) and takes_list:
            argv += [f"--{key}", *(str(v) for v in value)]
        elif isinstance(value, (list, dict)):
            raise RecipeError(f"{where}.{key} must be {type_names[key]}, got {value!r} ({type(value).__name__})")
        else:
            argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    try:
        namespace, _ = parser.parse_known_args(argv)
    except argparse.ArgumentError as err:
        key = (err.argument_name or "").split("/")[0].removeprefix("--")
        value = raw.get(key)
        if err.argument_name and err.message.startswith("invalid choice"):
            choices = [str(c) for c in parser._option_string_actions[f"--{key}"].choices]
            close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise RecipeError(
                f"{where}.{key}: {value!r} is not a choice; {hint}choices: {', '.join(choices)}"
            ) from None
        raise RecipeError(f"{where}.{key} must be {type_names[key]}, got {value!r} ({type(value).__name__})") from None
    return {**{key: getattr(namespace, key) for key in raw if key not in unchanged}, **unchanged}


def dataclass_schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in fields(cls) if f.init and not f.name.startswith("_")}


def dataclass_field_names(module: str, class_name: str) -> list[str]:
    """The init fields of dataclass `class_name` in `module`, read from its source with `ast`, without importing it
    (`transformers.training_args` imports torch: seconds). The same names as `dataclass_schema` for a dataclass whose
    fields are all declared in its own class body (`tests/test_recipe_parsing.py` checks `SkillItConfig`'s)."""
    spec = importlib.util.find_spec(module.split(".")[0])
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"no package {module.split('.')[0]!r}")
    path = Path(spec.submodule_search_locations[0], *module.split(".")[1:]).with_suffix(".py")
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    (body,) = [node.body for node in tree.body if isinstance(node, ast.ClassDef) and node.name == class_name]
    names = []
    for node in body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        if "ClassVar" in ast.unparse(node.annotation) or node.target.id.startswith("_"):
            continue
        call = node.value
        init = next((kw.value for kw in getattr(call, "keywords", ()) if kw.arg == "init"), None)
        if isinstance(init, ast.Constant) and init.value is False:
            continue
        names.append(node.target.id)
    return names


def signature_schema(fn: Callable, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The parameters of `fn` but `exclude` (and `*args`, `**kwargs`), name -> type. Only these annotations are
    resolved: the others may name types that `fn`'s module imports for type checkers alone (`tiny_model_config`'s
    tokenizer, whose module imports torch)."""
    kept = {
        name: p.annotation
        for name, p in inspect.signature(fn).parameters.items()
        if name not in exclude and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }
    annotated = types.SimpleNamespace(
        __annotations__={k: a for k, a in kept.items() if a is not inspect.Parameter.empty}
    )
    hints = typing.get_type_hints(annotated, globalns=inspect.unwrap(fn).__globals__)
    return {name: hints.get(name, Any) for name in kept}
