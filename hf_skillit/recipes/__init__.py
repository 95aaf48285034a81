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
- `build`: graph, model, evaluators, the checks that they fit (through the library's own checks: the mixer
  registry, `SkillsGraph`, `hf_skillit.rundir`), `make_trainer`, `graph_learning_kwargs`.
- `report`: `train_and_report` / `run`: train, save, the summary table with chance levels, the skills that moved
  most and the comparison with the `report:` section's reference runs, plots.
- `plan`: `describe_run`, the run plan without training (`hf-skillit train --dry-run`).
"""

from ..graph_learning import GraphLearningArguments
from .build import RunParts, build, graph_learning_kwargs, lego_reasoning_graph, make_trainer
from .data import load_natural_instructions
from .loading import load_recipe
from .plan import describe_run
from .report import format_summary, run, train_and_report
from .schema import RecipeError
from .sections import SECTIONS, DataArguments, GraphArguments, ModelArguments, Recipe

__all__ = [
    "SECTIONS",
    "DataArguments",
    "GraphArguments",
    "GraphLearningArguments",
    "ModelArguments",
    "Recipe",
    "RecipeError",
    "RunParts",
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
]
