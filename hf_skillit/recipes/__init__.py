"""Recipes: one YAML file describing a Skill-It run, parsed into dataclasses and checked before any training.

A recipe has the sections `model:`, `data:`, `graph:`, `training:` (`SkillItConfig`), `learn_graph:` and, optionally,
`lm_eval:`; each is parsed into a dataclass in the style of `HfArgumentParser` (`hf_skillit.recipes.sections`
lists them). `load_recipe` reads the file, applies `section.key=value` overrides, rejects unknown keys (with a
did-you-mean) and wrongly typed values, and checks that every local path exists; `build` loads data, graph and model
and checks that they fit together; `run` trains and reports. Relative paths are relative to the working directory.

One job per module, each depending only on those above it:

- `schema`: `RecipeError`, YAML reading, the type checker of a section's keys.
- `sections`: the section dataclasses and the table of sections (`SECTION_TYPES`; a new section is one entry).
- `loading`: `load_recipe` (overrides, sections, local paths), nothing loaded yet.
- `hub`: one lookup of a Hub model (cache, then one request); a failure is one line naming the offline alternatives.
- `data`: the tokenizer and the `SkillSet` of a recipe's data.
- `graphs`: the recipe's skills graph, checked against the data and the mixer (no torch: the dry run builds it).
- `build`: model, evaluators, the checks that they fit with the data and graph (`hf_skillit.rundir`),
  `make_trainer`, `graph_learning_kwargs`.
- `report`: `train_and_report` / `run`: train, save, the summary table with chance levels, the skills that moved
  most and the comparison with the `report:` section's reference runs, plots.
- `plan`: `describe_run`, the run plan without training (`hf-skillit train --dry-run`).
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from .._lazy import lazy_exports

# public name -> module defining it. Imported on first use (PEP 562), as in `hf_skillit/__init__.py`: `load_recipe`
# then reads and checks a recipe's keys without importing torch, transformers or datasets, so a wrong key is
# reported at once (`hf-skillit train` imports the rest only for a recipe that passed).
_EXPORTS = {
    "GraphLearningArguments": "hf_skillit.graph_learning",
    "RunParts": "hf_skillit.recipes.build",
    "build": "hf_skillit.recipes.build",
    "graph_learning_kwargs": "hf_skillit.recipes.build",
    "lego_reasoning_graph": "hf_skillit.recipes.graphs",
    "make_trainer": "hf_skillit.recipes.build",
    "load_natural_instructions": "hf_skillit.recipes.data",
    "load_recipe": "hf_skillit.recipes.loading",
    "describe_run": "hf_skillit.recipes.plan",
    "format_summary": "hf_skillit.recipes.report",
    "run": "hf_skillit.recipes.report",
    "train_and_report": "hf_skillit.recipes.report",
    "RecipeError": "hf_skillit.recipes.schema",
    "SECTIONS": "hf_skillit.recipes.sections",
    "DataArguments": "hf_skillit.recipes.sections",
    "GraphArguments": "hf_skillit.recipes.sections",
    "ModelArguments": "hf_skillit.recipes.sections",
    "Recipe": "hf_skillit.recipes.sections",
}

__all__ = [
    "DataArguments",
    "GraphArguments",
    "GraphLearningArguments",
    "ModelArguments",
    "Recipe",
    "RecipeError",
    "RunParts",
    "SECTIONS",
    "build",
    "describe_run",
    "format_summary",
    "graph_learning_kwargs",
    "lego_reasoning_graph",
    "load_natural_instructions",
    "load_recipe",
    "make_trainer",
    "run",
    "train_and_report",
]  # = the keys of _EXPORTS (tests/test_cli_startup.py checks)


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)


class _Package(types.ModuleType):
    """This package, whose exported `build` (the function) shares its name with the submodule `build`: importing the
    submodule sets the package attribute to the module, which would hide the function. The export wins, as it did
    when this file imported everything at once."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # static analysers and IDEs see the real imports
    from ..graph_learning import GraphLearningArguments
    from .build import RunParts, build, graph_learning_kwargs, make_trainer
    from .data import load_natural_instructions
    from .graphs import lego_reasoning_graph
    from .loading import load_recipe
    from .plan import describe_run
    from .report import format_summary, run, train_and_report
    from .schema import RecipeError
    from .sections import SECTIONS, DataArguments, GraphArguments, ModelArguments, Recipe
