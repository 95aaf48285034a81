"""The `training:` section's fields without importing torch: what `HfArgumentParser` knows of `SkillItConfig`, stored.

A recipe's `training:` values are read by `HfArgumentParser` (`hf_skillit.recipes.schema.parse_flags`), as the same
settings on a command line would be. Building that parser imports `transformers.training_args`, which imports
torch: seconds, which a misspelt choice or a dry run should not wait for. `training_fields.json` holds what the
parser knows of each field (how it converts a value, its choices, nargs, default, and the type named in errors),
*derived* from the live parser by `python -m hf_skillit.recipes.training_fields` and never edited by hand;
`tests/test_cli_startup.py` fails when it differs from what the dataclasses give now, so the two cannot drift
apart unnoticed. The fields themselves stay defined once, in `SkillItConfig` and `transformers.TrainingArguments`.

[`stored_fields`] returns the file only when it describes the code that would run: written from the same sources of
transformers' `training_args.py`, `trainer_utils.py` and `debug_utils.py` (the fields, their types and the enums
that give the choices; compared by a hash of the files, so a release that leaves them alone keeps the fast path),
and naming exactly the fields of the sources (read with `ast`, without importing them). Any other install (those
files changed, a field added since) gets None, and the recipe is checked by the full parse after the imports:
slower, never wrong. [`fields_parser`] rebuilds the argparse parser from the stored fields.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import types
from pathlib import Path
from typing import Any

from ..settings import steps_for_token_budget, steps_per_round, tokens_per_step
from .schema import dataclass_field_names

__all__ = ["TrainingSettings", "derive_fields", "fields_parser", "source_field_names", "stored_fields"]

PATH = Path(__file__).with_name("training_fields.json")

# How the parser converts a value, by the name of its `type`: HfArgumentParser's `string_to_bool` and
# `make_choice_type_function` become "bool" and "choice"; types a recipe cannot spell as a flag (a dataclass, a
# `dict`) are "other", left to the full parse.
_CONVERTERS = {"int": int, "float": float, "str": str}


def _string_to_bool(text: str) -> bool:
    # transformers.hf_argparser.string_to_bool, whose module the fast path does not import.
    if text.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if text.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"Truthy value expected: got {text} but expected one of yes/no, true/false.")


def _kind(action: argparse.Action) -> str:
    name = getattr(action.type, "__name__", "")
    if name == "string_to_bool":
        return "bool"
    if name in _CONVERTERS:
        return name
    return "choice" if action.choices is not None else "other"


def _deferred(text: str) -> str:
    return text


def _plain(value: Any) -> Any:
    """`value` as JSON holds it (an enum member as its value)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return getattr(value, "value", value)


# The transformers sources the stored fields are derived from: the fields and their types (`training_args.py`), the
# enums that give their choices (`trainer_utils.py`, `debug_utils.py`).
_SOURCES = ("training_args.py", "trainer_utils.py", "debug_utils.py")


def sources_fingerprint() -> str:
    """sha256 of the installed transformers' `_SOURCES`, read as bytes (no import)."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("no package 'transformers'")
    folder = Path(spec.submodule_search_locations[0])
    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def derive_fields() -> dict[str, Any]:
    """The stored form of `HfArgumentParser(SkillItConfig)`: imports torch and transformers."""
    from transformers import HfArgumentParser

    from ..config import SkillItConfig
    from .schema import _type_name, dataclass_schema

    parser = HfArgumentParser(SkillItConfig)
    fields = {}
    for name, hint in dataclass_schema(SkillItConfig).items():
        action = parser._option_string_actions[f"--{name}"]
        fields[name] = {
            "kind": _kind(action),
            "choices": None if action.choices is None else _plain(list(action.choices)),
            "nargs": action.nargs,
            "const": _plain(action.const),
            "default": _plain(action.default),
            "type_name": _type_name(hint),
        }
    return {
        "transformers": importlib.metadata.version("transformers"),  # for the reader: which release it came from
        "sources": sources_fingerprint(),
        "fields": fields,
    }


def source_field_names() -> list[str]:
    """The init fields of `SkillItConfig`, read from the sources of it and `TrainingArguments` without importing them."""
    return [
        *dataclass_field_names("transformers.training_args", "TrainingArguments"),
        *dataclass_field_names("hf_skillit.config", "SkillItConfig"),
    ]


def stored_fields() -> dict[str, Any] | None:
    """The stored fields, or None when they may not describe this install (see the module docstring)."""
    try:
        stored = json.loads(PATH.read_text(encoding="utf-8"))
        installed = sources_fingerprint()
    except (OSError, ValueError, ImportError):
        return None
    if stored.get("sources") != installed or sorted(stored["fields"]) != sorted(source_field_names()):
        return None
    return stored["fields"]


class TrainingSettings(types.SimpleNamespace):
    """A `training:` section read without torch: every `SkillItConfig` field as an attribute (the stored default,
    or the recipe's value), what `hf_skillit.settings` reads of a config, and the `SkillItConfig` properties the
    run plan prints. Not a `SkillItConfig`: `TrainingArguments.__post_init__` has not run on it."""

    @property
    def world_size(self) -> int:
        # TrainingArguments.world_size, without the process group: the processes torchrun announces.
        return int(os.environ.get("WORLD_SIZE", "1"))

    @property
    def tokens_per_step(self) -> int | None:
        return tokens_per_step(self)

    @property
    def steps_per_round(self) -> int:
        return steps_per_round(self)

    def steps_for_token_budget(self) -> int:
        return steps_for_token_budget(self)


def fields_parser(fields: dict[str, Any]) -> argparse.ArgumentParser:
    """An argparse parser with the flags `HfArgumentParser(SkillItConfig)` has, from the stored `fields`."""
    parser = argparse.ArgumentParser(exit_on_error=False, add_help=False)
    for name, spec in fields.items():
        kind, choices = spec["kind"], spec["choices"]
        if kind == "choice":  # as make_choice_type_function: the choice whose text is given, else the text
            convert: Any = {str(c): c for c in choices}.get
            converter = (lambda table: lambda text: table(text, text))(convert)
        elif kind == "bool":
            converter = _string_to_bool
        else:
            converter = _CONVERTERS.get(kind, _deferred)
        kwargs = {"type": converter, "choices": choices, "default": spec["default"]}
        if spec["nargs"] is not None:
            kwargs["nargs"] = spec["nargs"]
        if spec["nargs"] == "?":
            kwargs["const"] = spec["const"]
        parser.add_argument(f"--{name}", **kwargs)
    return parser


if __name__ == "__main__":  # python -m hf_skillit.recipes.training_fields: write the file from the live parser
    PATH.write_text(json.dumps(derive_fields(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {PATH}")
