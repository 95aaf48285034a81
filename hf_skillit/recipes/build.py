"""Building a recipe's run: graph, model and lm-eval evaluators on top of its data, checked to fit together before
the (possibly large) model is loaded; the trainer; the arguments of `learn_graph`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ..config import SkillItConfig
from ..graph import SkillsGraph
from ..rundir import check_fresh_output_dir, last_complete_checkpoint
from ..skills import SkillSet
from ..synthetic import make_tiny_model, tiny_model_config
from ..trainer import SkillItTrainer
from .data import load_data
from .graphs import build_graph
from .hub import hub_kwargs
from .schema import RecipeError, recipe_error
from .sections import ModelArguments, Recipe, recipe_trainer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from ..evaluation import SkillEvaluator

__all__ = [
    "RunParts",
    "build",
    "check_output_dir",
    "graph_learning_kwargs",
    "load_model",
    "make_trainer",
]


def load_model(args: ModelArguments, tokenizer: PreTrainedTokenizerBase, seq_len: int | None) -> PreTrainedModel:
    if args.tiny is not None:
        kwargs = dict(args.tiny)
        seed = kwargs.pop("seed", 0)
        # Positions past the table would fail mid-training: size it for the data unless told otherwise.
        kwargs.setdefault("max_position_embeddings", max(64, seq_len or 0))
        model = make_tiny_model(tiny_model_config(tokenizer=tokenizer, **kwargs), seed=seed)
    else:
        from transformers import AutoModelForCausalLM

        checkpoint = args.checkpoint()
        kwargs = {"revision": args.revision, **hub_kwargs(checkpoint, args.revision, "model.name_or_path")}
        if args.dtype is not None:
            kwargs["dtype"] = args.dtype
        model = AutoModelForCausalLM.from_pretrained(checkpoint, **kwargs)
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


def load_evaluators(recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> list[SkillEvaluator]:
    if recipe.lm_eval is None:
        return []
    try:
        return [recipe.lm_eval.skills(tokenizer)]
    except RuntimeError as err:  # a task whose dataset cannot be loaded: the message says what to download
        raise RecipeError(f"lm_eval: {err}") from None


def build(recipe: Recipe) -> RunParts:
    """Load the recipe's data, lm-eval tasks, graph, tokenizer and model, checking that data, graph and targets fit
    together before the (possibly large) model is loaded."""
    tokenizer, skills, seq_len = load_data(recipe)
    evaluators = load_evaluators(recipe, tokenizer)
    graph = build_graph(recipe, skills, evaluators)
    model = load_model(recipe.model, tokenizer, seq_len)
    return RunParts(model, tokenizer, skills, graph, recipe.training, evaluators)


def graph_learning_kwargs(recipe: Recipe) -> dict[str, Any]:
    """The keyword arguments of `hf_skillit.graph_learning.learn_graph` for the recipe's `learn_graph:` section,
    with the recipe's data loaded and the settings checked (so mistakes show before the first run trains)."""
    try:
        args = recipe.learn_graph.with_steps(recipe.training.max_steps)
    except ValueError as err:
        raise recipe_error(err, "learn_graph") from None
    settings = args.resolved()
    steps, eval_every = settings["steps"], settings["eval_every"]
    tokenizer, skills, seq_len = load_data(recipe)
    return {
        "skills": skills,
        "evaluators": load_evaluators(recipe, tokenizer),
        "model_init": lambda: load_model(recipe.model, tokenizer, seq_len),
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


def check_output_dir(config: SkillItConfig, resume: bool) -> None:
    if resume:
        if last_complete_checkpoint(config.output_dir) is None:
            raise RecipeError(f"--resume: no complete checkpoint in {config.output_dir!r}")
        return
    try:
        check_fresh_output_dir(
            config.output_dir,
            config.overwrite_output_dir,
            where="training.output_dir",
            advice="continue it with --resume, choose another output_dir, or --set training.overwrite_output_dir=true",
        )
    except ValueError as err:
        raise RecipeError(str(err)) from None


def make_trainer(recipe: Recipe, resume: bool = False) -> SkillItTrainer:
    """Check the output directory, `build` the recipe, and return its trainer (not yet trained): `SkillItTrainer`,
    or with `training.trainer: sft` TRL's `SFTTrainer` with the same rounds (`SkillItSFTTrainer`), which tokenizes
    text, prompt/completion and chat rows TRL's way."""
    check_output_dir(recipe.training, resume)
    parts = build(recipe)
    trainer_class = SkillItTrainer
    if recipe_trainer(recipe.raw) == "sft":
        from ..integrations.trl import SkillItSFTTrainer  # the training section parsed, so TRL is installed

        trainer_class = SkillItSFTTrainer
    trainer = trainer_class(
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
