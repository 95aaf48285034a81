"""Learning the skills graph from short training runs: Algorithms 2 (brute force) and 3 (approximate) of Skill-It.

Every run goes through [`SkillItTrainer`] with `mixing="fixed"`, so loss masks, multi-process training and peft
behave exactly as in the main training. A run starts from a fresh model built by `model_init()` (the base model f of
the paper; it may be a smaller proxy of the model trained later, paper Appendix D.4), trains `steps` steps on one
skill or on a balanced pair of skills, and records every evaluation skill's validation loss every `eval_every` steps
(a Skill-It "round" of the fixed mixture is one evaluation interval).

Each finished run is written to `output_dir/runs/<run>.json` at once, atomically, so an interrupted `learn_graph`
resumes where it stopped and runs can be spread over several processes (`num_shards`, `shard_index`). Once every run
exists, [`merge_runs`] turns the measurements into a [`SkillsGraph`] and writes `graph.json`, `measurements.json`
and `graph.png`.

This module trains and records; which runs to train and how their loss curves become edges (the edge rules) live in
`hf_skillit.graph_edges`, which needs no torch. [`GraphLearningArguments`] holds every setting of a graph-learning
run (a recipe's `learn_graph:` section); `learn_graph` accepts it as `graph_args`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import inspect
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from accelerate import PartialState
from transformers import PreTrainedModel, TrainerCallback, TrainingArguments, set_seed

from .config import SkillItConfig
from .evaluation import SkillEvaluator
from .graph import SkillsGraph
from .graph_edges import (
    EDGE_RULES,
    METHODS,
    GraphRun,
    GraphSettingsError,
    check_settings,
    describe_rule,
    edge_matrix,
    measure_runs,
    plan_runs,
    resolve_eval_skills,
)
from .rundir import (
    LEARN_GRAPH_CONFIG_NAME,
    LEARN_GRAPH_RUNS_DIR,
    LEARN_GRAPH_WORK_DIR,
    LEARNED_GRAPH_NAME,
    LEARNED_GRAPH_PNG,
    MEASUREMENTS_NAME,
    atomic_write,
    atomic_write_json,
    load_run_record,
    settings_hash,
    write_settings,
)
from .skills import SkillSet
from .trainer import SkillItTrainer, prepare_skills

__all__ = [
    "EDGE_RULES",
    "METHODS",
    "GraphLearningArguments",
    "GraphRun",
    "GraphSettingsError",
    "learn_graph",
    "merge_runs",
    "plan_runs",
]

logger = logging.getLogger(__name__)

CONFIG_NAME = LEARN_GRAPH_CONFIG_NAME
RUNS_DIR = LEARN_GRAPH_RUNS_DIR
WORK_DIR = LEARN_GRAPH_WORK_DIR
GRAPH_NAME = LEARNED_GRAPH_NAME
PLOT_NAME = LEARNED_GRAPH_PNG

# Training hyperparameters that change what a run measures: a resumed or merged run set must agree on them.
_IDENTITY_TRAINING_FIELDS = (
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "lr_scheduler_type",
    "warmup_steps",
    "optim",
    "seed",
    "data_seed",
    "bf16",
    "fp16",
    "eval_samples_per_skill",
)


@dataclasses.dataclass
class GraphLearningArguments:
    """How to learn a skills graph: the settings of [`learn_graph`] as one object (a recipe's `learn_graph:` section).

    Every run trains the base model from its starting point with the training settings (learning rate, batch
    size...), for `steps` steps on one skill or a balanced pair of skills. Constructing it checks the settings
    together (`hf_skillit.graph_edges.check_settings`); those that need `steps` wait until it is set
    ([`with_steps`]).

    Args:
        output_dir (`str`, *optional*): where the runs and `graph.json` go. In a recipe, defaults to
            `training.output_dir + "_graph"`.
        method (`str`, *optional*, defaults to `"brute_force"`): "brute_force" (Algorithm 2) or "approximate"
            (Algorithm 3).
        steps (`int`, *optional*): steps H of each run. In a recipe, defaults to `training.max_steps`.
        eval_every (`int`, *optional*): steps between two validation losses of a run (must divide `steps`;
            defaults to `steps`).
        edge_rule (`str`, *optional*): "delta", "delta_diff", "positive" or "lego" (see [`learn_graph`]); defaults
            to the method's.
        target_loss (`float`, *optional*): the loss the "lego" rule counts steps to (paper: 0.01).
        diagonal (`float`, *optional*): set every A_jj to this (paper LEGO: 1).
        measure_at (`int`, *optional*): the step at which loss changes are read (paper NI: 100 of 600).
        eval_skills (`list[str]`, *optional*): the graph's columns; defaults to [`learn_graph`]'s.
        num_shards (`int`, *optional*, defaults to 1): split the runs over this many processes...
        shard_index (`int`, *optional*, defaults to 0): ...and train this one's share of them.

    Example:

    ```python
    >>> from hf_skillit.graph_learning import GraphLearningArguments
    >>> GraphLearningArguments(method="approximate", steps=100, eval_every=20).with_steps(600).steps
    100
    ```
    """

    output_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "Where runs and graph.json go. Default: training.output_dir + '_graph'."}
    )
    method: str = dataclasses.field(
        default="brute_force", metadata={"help": "brute_force (Algorithm 2) or approximate (Algorithm 3)."}
    )
    steps: int | None = dataclasses.field(
        default=None, metadata={"help": "Steps H of each run. Default: training.max_steps."}
    )
    eval_every: int | None = dataclasses.field(
        default=None, metadata={"help": "Steps between two validation losses of a run (must divide steps)."}
    )
    edge_rule: str | None = dataclasses.field(
        default=None,
        metadata={"help": "delta, delta_diff, positive or lego (see learn_graph). Default: the method's."},
    )
    target_loss: float | None = dataclasses.field(
        default=None, metadata={"help": "Loss the lego rule counts steps to (0.01)."}
    )
    diagonal: float | None = dataclasses.field(
        default=None, metadata={"help": "Set every A_jj to this (paper LEGO: 1)."}
    )
    measure_at: int | None = dataclasses.field(
        default=None, metadata={"help": "Step at which loss changes are read (paper NI: 100 of 600)."}
    )
    eval_skills: list[str] | None = dataclasses.field(
        default=None, metadata={"help": "Graph columns. Default: learn_graph's."}
    )
    num_shards: int = dataclasses.field(default=1, metadata={"help": "Split the runs over this many processes..."})
    shard_index: int = dataclasses.field(default=0, metadata={"help": "...and train this one's share of them."})

    def __post_init__(self) -> None:
        self.resolved()

    def resolved(self) -> dict[str, Any]:
        """The checked settings with defaults filled in (`eval_every`, `edge_rule`), as `check_settings` returns."""
        return check_settings(
            self.method,
            self.steps,
            self.eval_every,
            self.edge_rule,
            self.target_loss,
            self.diagonal,
            self.measure_at,
            self.num_shards,
            self.shard_index,
        )

    def with_steps(self, default_steps: int) -> GraphLearningArguments:
        """These settings with `steps` set (to `default_steps` when it is not), checked again in full."""
        return dataclasses.replace(self, steps=self.steps or default_steps)


def learn_graph(
    *,
    skills: SkillSet,
    model_init: Callable[[], PreTrainedModel],
    output_dir: str | os.PathLike,
    steps: int | None = None,
    method: str = "brute_force",
    eval_skills: Sequence[str] | None = None,
    eval_every: int | None = None,
    edge_rule: str | None = None,
    target_loss: float | None = None,
    diagonal: float | None = None,
    measure_at: int | None = None,
    args: TrainingArguments | Mapping[str, Any] | None = None,
    processing_class: Any = None,
    data_collator: Callable | None = None,
    evaluators: Sequence[SkillEvaluator] | None = None,
    num_shards: int = 1,
    shard_index: int = 0,
    model_description: str | None = None,
    graph_args: GraphLearningArguments | None = None,
) -> SkillsGraph | None:
    """Learn the skills graph A (training skills x evaluation skills) with short training runs.

    Args:
        skills: training data of every training skill and validation data of every evaluation skill.
        model_init: returns the base model, freshly built (or loaded) and identical at every call; called once per
            run, after `transformers.set_seed(args.seed)`, so a model built from a config with random weights is
            identical too. May build a smaller proxy of the model that the graph is for (paper Appendix D.4).
        output_dir: where the runs (`runs/*.json`), `graph.json`, `measurements.json` and `graph.png` go. Runs
            already there are not trained again (resume); they must come from the same configuration.
        steps: H, the optimizer steps of each run.
        method: "brute_force" (Algorithm 2: each evaluation skill j alone and each pair (i, j), O(H k^2) runs; needs
            the evaluation skills to be training skills) or "approximate" (Algorithm 3: each training skill alone,
            O(H k) runs; works with evaluation skills disjoint from the training skills, i.e. out-of-domain).
        eval_skills: the evaluation skills (graph columns). Default: the training skills for brute force, every
            skill with validation data (and every evaluator's skills) for approximate.
        eval_every: steps between two evaluations of the loss curve (must divide `steps`; default: `steps`, only the
            start and the end).
        edge_rule: how A is set from the measured loss changes. With L_j the validation loss of skill j, δ_i^j =
            L_j(f) - L_j(f trained on i) and, for brute force, δ_ij^j the same after training on the pair (i, j):
            - "delta": brute force A_ij = δ_ij^j (and A_jj = δ_j^j); approximate A_ij = δ_i^j.
            - "delta_diff" (brute force, the default): A_ij = δ_ij^j - δ_j^j; an edge is A_ij > 0 (Algorithm 2).
            - "positive": the previous rule (brute force) or δ_i^j (approximate, the default is "delta") clipped
              at 0, as the paper's Alpaca and Pile of Law heatmaps.
            - "lego" (brute force): A_ij = 0.5 when the pair (i, j) reaches `target_loss` on j in fewer steps than
              j alone (0 when the pair never reaches it), the paper's LEGO and addition graphs (Figures 10, 11).
        target_loss: the loss that the "lego" rule counts steps to (paper: 0.01).
        diagonal: if set, every entry of a skill onto itself (A_jj) is this value (the paper sets 1 for LEGO and
            addition); otherwise it is what the edge rule gives.
        measure_at: the step at which loss changes are read (a multiple of `eval_every`; default: `steps`), e.g.
            the paper's Natural Instructions graphs read the change over the first 100 of 600 steps.
        args: the training settings of every run: a `TrainingArguments` (or `SkillItConfig`) or a mapping of
            `SkillItConfig` keyword arguments. Its `output_dir`, `max_steps` and mixture settings are replaced.
        processing_class, data_collator, evaluators: as for [`SkillItTrainer`]; evaluators' skills may be
            evaluation skills (e.g. lm-eval tasks, out-of-domain).
        num_shards, shard_index: this process trains runs `shard_index, shard_index + num_shards, ...` of
            [`plan_runs`]; start one process per shard index, then `merge_runs(output_dir)`.
        graph_args: all of `steps`, `method`, `eval_skills`, `eval_every`, `edge_rule`, `target_loss`, `diagonal`,
            `measure_at`, `num_shards` and `shard_index` as one [`GraphLearningArguments`] (its `output_dir` is not
            used: pass `output_dir`); those arguments must then be left out.
        model_description: the base model as recorded in the graph's metadata (default: class, model type,
            parameter count and checkpoint of the model built by `model_init`).

    Returns:
        The graph, once every run of every shard exists (also saved to `output_dir/graph.json`); None when runs of
        other shards are still missing.
    """
    if not isinstance(skills, SkillSet):
        raise ValueError(f"skills must be a SkillSet, got {type(skills).__name__}")
    if not callable(model_init):
        raise ValueError(f"model_init must be a callable returning a fresh model, got {type(model_init).__name__}")
    settings = {
        "steps": steps,
        "method": method,
        "eval_skills": eval_skills,
        "eval_every": eval_every,
        "edge_rule": edge_rule,
        "target_loss": target_loss,
        "diagonal": diagonal,
        "measure_at": measure_at,
        "num_shards": num_shards,
        "shard_index": shard_index,
    }
    if graph_args is None:
        graph_args = GraphLearningArguments(**settings)
    else:
        defaults = inspect.signature(learn_graph).parameters
        if given := [name for name, value in settings.items() if value != defaults[name].default]:
            raise ValueError(f"give either graph_args or {', '.join(given)}, not both")
    if graph_args.steps is None:
        raise GraphSettingsError("steps must be a positive integer, got None")
    resolved = graph_args.resolved()
    method, steps, eval_every = resolved["method"], resolved["steps"], resolved["eval_every"]
    num_shards, shard_index = graph_args.num_shards, graph_args.shard_index
    edge = {key: resolved[key] for key in ("edge_rule", "target_loss", "diagonal", "measure_at")}
    evaluators = list(evaluators or [])
    measured = list(skills.eval_skills) + [s for e in evaluators for s in e.skills if s not in skills.eval_skills]
    eval_skills = resolve_eval_skills(method, skills.train_skills, measured, graph_args.eval_skills)

    output_dir = Path(output_dir)
    template = fixed_mixture_run_args(args, output_dir / WORK_DIR, steps, eval_every, {skills.train_skills[0]: 1.0})
    identity = {
        "method": method,
        "steps": steps,
        "eval_every": eval_every,
        "train_skills": list(skills.train_skills),
        "eval_skills": list(eval_skills),
        "training": {name: _jsonable(getattr(template, name)) for name in _IDENTITY_TRAINING_FIELDS},
    }
    config = {
        "identity": identity,
        "identity_hash": settings_hash(identity),
        **edge,
        "model_description": model_description,
    }
    state = PartialState()
    if state.is_main_process:
        write_settings(output_dir / CONFIG_NAME, config, "runs of another learn_graph configuration")
    state.wait_for_everyone()

    # Tokenize once here rather than in each run's trainer.
    skills = prepare_skills(skills, processing_class, template)
    plan = plan_runs(method, skills.train_skills, eval_skills)
    mine = plan[shard_index::num_shards]
    pending = [run for run in mine if not _run_path(output_dir, run).is_file()]
    logger.info(
        "learn_graph (%s, H=%d): %d runs in all, %d in this shard, %d to train",
        method,
        steps,
        len(plan),
        len(mine),
        len(pending),
    )
    for number, run in enumerate(pending, start=1):
        logger.info("run %d/%d (%s): training on %s", number, len(pending), run.id, ", ".join(run.train_skills))
        record = _train_run(
            run,
            skills=skills,
            eval_skills=eval_skills,
            model_init=model_init,
            args=fixed_mixture_run_args(args, output_dir / WORK_DIR / run.id, steps, eval_every, run.weights),
            processing_class=processing_class,
            data_collator=data_collator,
            evaluators=evaluators,
        )
        if record is not None:
            record["identity_hash"] = config["identity_hash"]
            atomic_write_json(_run_path(output_dir, run), record)
            shutil.rmtree(output_dir / WORK_DIR / run.id, ignore_errors=True)
    if state.is_main_process:
        # Other shards may still be using it.
        with contextlib.suppress(OSError):
            (output_dir / WORK_DIR).rmdir()
    state.wait_for_everyone()

    missing = _missing_runs(output_dir, plan)
    if missing:
        logger.info("%d runs of other shards are still missing; merge with merge_runs(%r)", len(missing), output_dir)
        return None
    if state.is_main_process:
        graph = merge_runs(output_dir)
    state.wait_for_everyone()
    return graph if state.is_main_process else SkillsGraph.load(output_dir / GRAPH_NAME)


def merge_runs(
    output_dir: str | os.PathLike,
    *,
    edge_rule: str | None = None,
    target_loss: float | None = None,
    diagonal: float | None = None,
    measure_at: int | None = None,
    write: bool = True,
) -> SkillsGraph:
    """Build the graph from the finished runs in `output_dir` and write `graph.json`, `measurements.json`, `graph.png`.

    With `edge_rule` left out, the edge settings are those `learn_graph` was called with. Pass `edge_rule` (and with
    it `target_loss`, `diagonal`, `measure_at` as needed) to derive another graph from the same runs, with no
    training; `write=False` leaves the files as they are. Raises a ValueError listing the missing runs if some are
    not finished.
    """
    output_dir = Path(output_dir)
    config = _read_config(output_dir)
    identity = config["identity"]
    method, steps, eval_every = identity["method"], identity["steps"], identity["eval_every"]
    if edge_rule is None:
        edge = {key: config[key] for key in ("edge_rule", "target_loss", "diagonal", "measure_at")}
    else:
        resolved = check_settings(method, steps, eval_every, edge_rule, target_loss, diagonal, measure_at)
        edge = {key: resolved[key] for key in ("edge_rule", "target_loss", "diagonal", "measure_at")}
    train_skills, eval_skills = identity["train_skills"], identity["eval_skills"]
    plan = plan_runs(method, train_skills, eval_skills)
    missing = _missing_runs(output_dir, plan)
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(plan)} runs are not finished in {output_dir / RUNS_DIR}: {', '.join(missing)}. "
            "Run learn_graph again (every shard) to train them."
        )
    runs = {
        run.id: load_run_record(
            _run_path(output_dir, run), config["identity_hash"], train_skills=list(run.train_skills)
        )
        for run in plan
    }

    measurements = measure_runs(method, plan, runs, train_skills, eval_skills, edge)
    matrix = edge_matrix(method, measurements, train_skills, eval_skills, edge)
    cost = {
        "runs": len(plan),
        "train_steps": steps * len(plan),
        "seconds": round(sum(record["seconds"] for record in runs.values()), 1),
    }
    models = sorted({record["model"] for record in runs.values()})
    metadata = {
        "method": method,
        "steps": steps,
        "eval_every": eval_every,
        "edge_rule": edge["edge_rule"],
        "edge_rule_description": describe_rule(method, edge, steps),
        "target_loss": edge["target_loss"],
        "diagonal": edge["diagonal"],
        "measure_at": None if edge["edge_rule"] == "lego" else edge["measure_at"] or steps,
        "base_model": config["model_description"] or "; ".join(models),
        "seed": identity["training"]["seed"],
        "training": identity["training"],
        "cost": cost,
    }
    graph = SkillsGraph(matrix, train_skills, eval_skills, metadata)
    if not write:
        return graph
    # Every file is replaced whole, and graph.json last: a reader never sees half a file, nor a graph without
    # the measurements it came from.
    measurements["runs"] = runs
    measurements["cost"] = cost
    atomic_write_json(output_dir / MEASUREMENTS_NAME, measurements, indent=1)
    from .plotting import plot_graph  # matplotlib only when a graph is written

    atomic_write(
        output_dir / PLOT_NAME, lambda tmp: plot_graph(graph, tmp, title=f"{method}, H={steps}, {edge['edge_rule']}")
    )
    graph.save(output_dir / GRAPH_NAME)
    return graph


# ----- validation ---------------------------------------------------------------------------------------------------


# ----- runs ---------------------------------------------------------------------------------------------------------


def fixed_mixture_run_args(
    args: TrainingArguments | Mapping[str, Any] | None,
    output_dir: Path,
    steps: int,
    eval_every: int,
    weights: Mapping[str, float],
) -> SkillItConfig:
    """The user's training settings with this run's length, fixed mixture and scratch output directory."""
    if args is None:
        base: dict[str, Any] = {}
    elif isinstance(args, TrainingArguments):
        base = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init}
    elif isinstance(args, Mapping):
        base = dict(args)
    else:
        raise ValueError(f"args must be TrainingArguments or a mapping of SkillItConfig arguments, got {type(args)}")
    known = {f.name for f in dataclasses.fields(SkillItConfig) if f.init}
    base = {key: value for key, value in base.items() if key in known}
    return SkillItConfig(
        **{
            **base,
            "output_dir": str(output_dir),
            "run_name": None,
            "max_steps": steps,
            "rounds": steps // eval_every,
            "mixing": "fixed",
            "fixed_weights": dict(weights),
            "graph_path": None,
            "target_skills": None,
            "evaluate_skills_every_round": True,
            "evaluate_skills_before_training": False,  # the run's own step-0 point, lm-eval included (_Untrained)
            "save_strategy": "no",
            "eval_strategy": "no",
            "load_best_model_at_end": False,
            "push_to_hub": False,
            "overwrite_output_dir": True,  # a run cut short is trained again from its start
        }
    )


def _train_run(
    run: GraphRun,
    *,
    skills: SkillSet,
    eval_skills: Sequence[str],
    model_init: Callable[[], PreTrainedModel],
    args: SkillItConfig,
    processing_class: Any,
    data_collator: Callable | None,
    evaluators: list[SkillEvaluator],
) -> dict[str, Any] | None:
    """Train one run; return its loss curve on the main process (which writes the files), None on the others."""
    validation = {s: skills.validation(s) for s in eval_skills if s in skills.eval_skills}
    run_skills = SkillSet({s: skills.train(s) for s in run.train_skills}, validation)
    set_seed(args.seed)
    model = model_init()
    description = _describe_model(model)
    trainer = SkillItTrainer(
        model=model,
        args=args,
        skills=run_skills,
        processing_class=processing_class,
        data_collator=data_collator,
        evaluators=evaluators,
    )
    untrained = _Untrained(trainer)
    trainer.add_callback(untrained)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    main = trainer.is_world_process_zero()
    # The main process wrote the trajectory; another one could read it while the last line is being appended.
    rounds = trainer.trajectory if main else []
    # The trainer and its callbacks hold each other: collect them now, so two models never sit in memory together.
    initial = untrained.losses
    del trainer, model, untrained
    gc.collect()
    if not main:
        return None

    samples = dict.fromkeys(run.train_skills, 0)
    curve_samples = {s: [0] for s in run.train_skills}
    for record in rounds:
        for s in run.train_skills:
            samples[s] += record["samples"][s]
            curve_samples[s].append(samples[s])
    return {
        "run": run.id,
        "train_skills": list(run.train_skills),
        "weights": run.weights,
        "model": description,
        "steps": [0] + [record["global_step"] for record in rounds],
        "loss": {s: [initial[s]] + [record["eval_loss"][s] for record in rounds] for s in eval_skills},
        "samples": curve_samples,
        "seconds": round(seconds, 2),
    }


class _Untrained(TrainerCallback):
    """Scores the untrained model (evaluators included) once, in the loop, on the model the Trainer prepared."""

    def __init__(self, trainer: SkillItTrainer):
        self.trainer, self.losses = trainer, {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.losses = self.trainer.evaluate_skills()


def _describe_model(model: Any) -> str:
    config = getattr(model, "config", None)
    parameters = sum(p.numel() for p in model.parameters())
    kind = getattr(config, "model_type", None) or "unknown type"
    source = getattr(config, "_name_or_path", "") or "built from a config"
    return f"{type(model).__name__} ({kind}, {parameters / 1e6:.2f}M parameters, {source})"


# ----- measurements and edges ---------------------------------------------------------------------------------------


# ----- files --------------------------------------------------------------------------------------------------------


def _run_path(output_dir: Path, run: GraphRun) -> Path:
    return output_dir / RUNS_DIR / f"{run.id}.json"


def _missing_runs(output_dir: Path, plan: list[GraphRun]) -> list[str]:
    return [run.id for run in plan if not _run_path(output_dir, run).is_file()]


def _jsonable(value: Any) -> Any:
    value = value.value if isinstance(value, Enum) else value
    return value if isinstance(value, (bool, int, float, str, type(None))) else str(value)


def _read_config(output_dir: Path) -> dict[str, Any]:
    path = output_dir / CONFIG_NAME
    if not path.is_file():
        raise ValueError(f"{output_dir} holds no {CONFIG_NAME}: it is not a learn_graph output directory")
    return json.loads(path.read_text())
