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
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import PartialState
from transformers import PreTrainedModel, TrainingArguments, set_seed

from .config import SkillItConfig
from .evaluation import SkillEvaluator
from .graph import SkillsGraph
from .rundir import (
    LEARN_GRAPH_CONFIG_NAME,
    LEARN_GRAPH_RUNS_DIR,
    LEARN_GRAPH_WORK_DIR,
    LEARNED_GRAPH_NAME,
    LEARNED_GRAPH_PNG,
    MEASUREMENTS_NAME,
    atomic_write,
    atomic_write_json,
)
from .skills import SkillSet
from .trainer import SkillItTrainer

__all__ = ["EDGE_RULES", "METHODS", "GraphRun", "learn_graph", "merge_runs", "plan_runs"]

logger = logging.getLogger(__name__)

METHODS = ("brute_force", "approximate")
EDGE_RULES = ("delta", "delta_diff", "positive", "lego")
# Rules that compare a pair run with the single run of its evaluation skill exist only for Algorithm 2.
_BRUTE_FORCE_ONLY = ("delta_diff", "lego")
_DEFAULT_EDGE_RULE = {"brute_force": "delta_diff", "approximate": "delta"}
LEGO_EDGE_WEIGHT = 0.5  # the paper's LEGO/addition edge weight (Appendix C.2, Figures 10 and 11)

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


@dataclasses.dataclass(frozen=True)
class GraphRun:
    """One short training run: `train_skills` (one skill, or a pair trained as a balanced mixture)."""

    id: str
    train_skills: tuple[str, ...]

    @property
    def weights(self) -> dict[str, float]:
        return {skill: 1.0 / len(self.train_skills) for skill in self.train_skills}


def plan_runs(method: str, train_skills: Sequence[str], eval_skills: Sequence[str]) -> list[GraphRun]:
    """The runs of a method, in a fixed order (shards take every `num_shards`-th run of this list).

    Brute force (Algorithm 2): each evaluation skill j alone, and each unordered pair {i, j} of distinct skills with
    j an evaluation skill (one pair run measures both of its skills). Approximate (Algorithm 3): each training skill
    alone. Run ids use the skills' positions in `train_skills`, so they are valid file names for any skill name.
    """
    _check_choice(method, METHODS, "method")
    index = {skill: i for i, skill in enumerate(train_skills)}
    if method == "approximate":
        return [GraphRun(f"single-{i}", (skill,)) for skill, i in index.items()]
    targets = {index[skill] for skill in eval_skills}
    runs = [GraphRun(f"single-{i}", (train_skills[i],)) for i in sorted(targets)]
    for i in range(len(train_skills)):
        for j in range(i + 1, len(train_skills)):
            if i in targets or j in targets:
                runs.append(GraphRun(f"pair-{i}-{j}", (train_skills[i], train_skills[j])))
    return runs


def learn_graph(
    *,
    skills: SkillSet,
    model_init: Callable[[], PreTrainedModel],
    output_dir: str | os.PathLike,
    steps: int,
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
    _check_choice(method, METHODS, "method")
    _check_positive_int(steps, "steps")
    eval_every = steps if eval_every is None else _check_positive_int(eval_every, "eval_every")
    if steps % eval_every:
        raise ValueError(
            f"eval_every={eval_every} does not divide steps={steps}: the loss curve needs equal intervals"
        )
    evaluators = list(evaluators or [])
    eval_skills = _resolve_eval_skills(method, skills, eval_skills, evaluators)
    edge = _edge_settings(method, edge_rule, target_loss, diagonal, measure_at, steps, eval_every)
    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be an integer >= 1, got {num_shards!r}")
    if not isinstance(shard_index, int) or not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index!r}")

    output_dir = Path(output_dir)
    template = _run_args(args, output_dir / WORK_DIR, steps, eval_every, {skills.train_skills[0]: 1.0})
    identity = {
        "method": method,
        "steps": steps,
        "eval_every": eval_every,
        "train_skills": list(skills.train_skills),
        "eval_skills": list(eval_skills),
        "training": {name: _jsonable(getattr(template, name)) for name in _IDENTITY_TRAINING_FIELDS},
    }
    config = {"identity": identity, "identity_hash": _hash(identity), **edge, "model_description": model_description}
    state = PartialState()
    if state.is_main_process:
        _write_config(output_dir, config)
    state.wait_for_everyone()

    # Tokenize once here rather than in each run's trainer.
    skills = skills.tokenized(processing_class, template.dataset_text_field, template.max_length)
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
            args=_run_args(args, output_dir / WORK_DIR / run.id, steps, eval_every, run.weights),
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
        edge = _edge_settings(method, edge_rule, target_loss, diagonal, measure_at, steps, eval_every)
    train_skills, eval_skills = identity["train_skills"], identity["eval_skills"]
    plan = plan_runs(method, train_skills, eval_skills)
    missing = _missing_runs(output_dir, plan)
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(plan)} runs are not finished in {output_dir / RUNS_DIR}: {', '.join(missing)}. "
            "Run learn_graph again (every shard) to train them."
        )
    runs = {run.id: _load_run(output_dir, run, config["identity_hash"]) for run in plan}

    measurements = _measure(method, plan, runs, train_skills, eval_skills, edge)
    matrix = _edges(method, measurements, train_skills, eval_skills, edge)
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
        "edge_rule_description": _describe_rule(method, edge, steps),
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
    atomic_write(
        output_dir / PLOT_NAME, lambda tmp: graph.plot(tmp, title=f"{method}, H={steps}, {edge['edge_rule']}")
    )
    graph.save(output_dir / GRAPH_NAME)
    return graph


# ----- validation ---------------------------------------------------------------------------------------------------


def _check_choice(value: object, choices: Sequence[str], what: str) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def _check_positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _resolve_eval_skills(
    method: str, skills: SkillSet, eval_skills: Sequence[str] | None, evaluators: list[SkillEvaluator]
) -> tuple[str, ...]:
    measured = list(skills.eval_skills) + [s for e in evaluators for s in e.skills if s not in skills.eval_skills]
    if eval_skills is None:
        eval_skills = skills.train_skills if method == "brute_force" else measured
    elif isinstance(eval_skills, str):
        raise ValueError(f"eval_skills must be a sequence of names, got the string {eval_skills!r}")
    eval_skills = tuple(eval_skills)
    if not eval_skills:
        raise ValueError("there are no evaluation skills: give eval_skills or validation data")
    if duplicates := sorted({s for s in eval_skills if eval_skills.count(s) > 1}):
        raise ValueError(f"eval_skills lists skills more than once: {duplicates}")
    if method == "brute_force" and (outside := [s for s in eval_skills if s not in skills.train_skills]):
        raise ValueError(
            f"brute_force trains on pairs of evaluation and training skills, so the evaluation skills must be training "
            f"skills; {outside} are not (training skills: {list(skills.train_skills)}). Use method='approximate' for "
            "evaluation skills disjoint from the training skills."
        )
    if unmeasured := [s for s in eval_skills if s not in measured]:
        raise ValueError(
            f"evaluation skills {unmeasured} have no validation data (skills with validation data or an evaluator: "
            f"{measured})"
        )
    return eval_skills


def _edge_settings(
    method: str,
    edge_rule: str | None,
    target_loss: float | None,
    diagonal: float | None,
    measure_at: int | None,
    steps: int,
    eval_every: int,
) -> dict[str, Any]:
    edge_rule = _DEFAULT_EDGE_RULE[method] if edge_rule is None else edge_rule
    _check_choice(edge_rule, EDGE_RULES, "edge_rule")
    if method == "approximate" and edge_rule in _BRUTE_FORCE_ONLY:
        raise ValueError(
            f"edge_rule={edge_rule!r} compares pair runs with single runs: it needs method='brute_force' "
            "(approximate supports 'delta' and 'positive')"
        )
    if edge_rule == "lego":
        if target_loss is None or not math.isfinite(target_loss) or target_loss <= 0:
            raise ValueError(f"edge_rule='lego' needs a finite target_loss > 0 (paper: 0.01), got {target_loss!r}")
        if measure_at is not None:
            raise ValueError("edge_rule='lego' counts steps to target_loss over the whole run; drop measure_at")
    elif target_loss is not None:
        raise ValueError(f"target_loss is only used by edge_rule='lego', not {edge_rule!r}")
    if diagonal is not None and not math.isfinite(diagonal):
        raise ValueError(f"diagonal must be a finite number, got {diagonal!r}")
    if measure_at is not None:
        _check_positive_int(measure_at, "measure_at")
        if measure_at > steps or measure_at % eval_every:
            raise ValueError(
                f"measure_at={measure_at} must be a step of the loss curve: a multiple of eval_every={eval_every} "
                f"up to steps={steps}"
            )
    return {"edge_rule": edge_rule, "target_loss": target_loss, "diagonal": diagonal, "measure_at": measure_at}


# ----- runs ---------------------------------------------------------------------------------------------------------


def _run_args(
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
    start = time.perf_counter()
    initial = trainer.evaluate_skills()
    trainer.train()
    seconds = time.perf_counter() - start
    main = trainer.is_world_process_zero()
    # The main process wrote the trajectory; another one could read it while the last line is being appended.
    rounds = trainer.trajectory if main else []
    # The trainer and its callbacks hold each other: collect them now, so two models never sit in memory together.
    del trainer, model
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


def _describe_model(model: Any) -> str:
    config = getattr(model, "config", None)
    parameters = sum(p.numel() for p in model.parameters())
    kind = getattr(config, "model_type", None) or "unknown type"
    source = getattr(config, "_name_or_path", "") or "built from a config"
    return f"{type(model).__name__} ({kind}, {parameters / 1e6:.2f}M parameters, {source})"


# ----- measurements and edges ---------------------------------------------------------------------------------------


def _measure(
    method: str,
    plan: list[GraphRun],
    runs: Mapping[str, dict[str, Any]],
    train_skills: Sequence[str],
    eval_skills: Sequence[str],
    edge: Mapping[str, Any],
) -> dict[str, Any]:
    """Loss changes (and, for the "lego" rule, steps to the target loss) from the runs' curves."""
    first = runs[plan[0].id]
    initial = {s: first["loss"][s][0] for s in eval_skills}
    spread = max(abs(record["loss"][s][0] - initial[s]) for record in runs.values() for s in eval_skills)
    if not math.isfinite(spread) or any(not math.isfinite(v) for v in initial.values()):
        bad = [s for s in eval_skills if not all(math.isfinite(v) for r in runs.values() for v in r["loss"][s])]
        raise ValueError(f"the validation losses of skills {bad} are not finite (no scored tokens, or divergence)")
    if spread > 1e-3 * max(1.0, max(initial.values())):
        logger.warning(
            "the runs' initial losses differ by up to %.4g: model_init does not return identical models, so the "
            "runs do not start from the same base model",
            spread,
        )

    def at_step(record: dict[str, Any], skill: str) -> float:
        step = edge["measure_at"] or record["steps"][-1]
        return record["loss"][skill][record["steps"].index(step)]

    def steps_to_target(record: dict[str, Any], skill: str) -> int | None:
        hits = [
            s for s, loss in zip(record["steps"], record["loss"][skill], strict=True) if loss <= edge["target_loss"]
        ]
        return hits[0] if hits else None

    def single(skill: str) -> dict[str, Any]:
        return runs[f"single-{train_skills.index(skill)}"]

    out: dict[str, Any] = {
        "method": method,
        "train_skills": list(train_skills),
        "eval_skills": list(eval_skills),
        "initial_loss": initial,
        "initial_loss_spread": spread,
        "measured_at_step": edge["measure_at"] or first["steps"][-1],
    }
    if method == "approximate":
        out["delta"] = [[initial[j] - at_step(single(i), j) for j in eval_skills] for i in train_skills]
        return out

    def pair(i: str, j: str) -> dict[str, Any]:
        a, b = sorted((train_skills.index(i), train_skills.index(j)))
        return single(j) if a == b else runs[f"pair-{a}-{b}"]

    out["delta_single"] = {j: initial[j] - at_step(single(j), j) for j in eval_skills}
    out["delta_pair"] = [[initial[j] - at_step(pair(i, j), j) for j in eval_skills] for i in train_skills]
    if edge["edge_rule"] == "lego":
        out["target_loss"] = edge["target_loss"]
        out["steps_to_target_single"] = {j: steps_to_target(single(j), j) for j in eval_skills}
        out["steps_to_target_pair"] = [[steps_to_target(pair(i, j), j) for j in eval_skills] for i in train_skills]
    return out


def _edges(
    method: str,
    measurements: Mapping[str, Any],
    train_skills: Sequence[str],
    eval_skills: Sequence[str],
    edge: Mapping[str, Any],
) -> np.ndarray:
    rule = edge["edge_rule"]
    if method == "approximate":
        matrix = np.array(measurements["delta"], dtype=np.float64)
    elif rule == "lego":
        single = [measurements["steps_to_target_single"][j] for j in eval_skills]
        pair = measurements["steps_to_target_pair"]
        # The pair must reach the target, and sooner than j alone (which may never reach it).
        matrix = np.array(
            [
                [
                    LEGO_EDGE_WEIGHT if p is not None and (s is None or p < s) else 0.0
                    for p, s in zip(row, single, strict=True)
                ]
                for row in pair
            ]
        )
    else:
        matrix = np.array(measurements["delta_pair"], dtype=np.float64)
        if rule != "delta":
            matrix = matrix - np.array([measurements["delta_single"][j] for j in eval_skills])
    if rule == "positive":
        matrix = np.maximum(matrix, 0.0)
    if edge["diagonal"] is not None:
        for j, skill in enumerate(eval_skills):
            if skill in train_skills:
                matrix[train_skills.index(skill), j] = edge["diagonal"]
    return matrix


def _describe_rule(method: str, edge: Mapping[str, Any], steps: int) -> str:
    at = edge["measure_at"] or steps
    descriptions = {
        ("approximate", "delta"): f"A_ij = δ_i^j = L_j(f) - L_j(f after training on i), at step {at}",
        (
            "approximate",
            "positive",
        ): f"A_ij = max(0, δ_i^j), δ_i^j = L_j(f) - L_j(f after training on i), at step {at}",
        ("brute_force", "delta"): f"A_ij = δ_ij^j = L_j(f) - L_j(f after training on (i, j)), at step {at}",
        ("brute_force", "delta_diff"): f"A_ij = δ_ij^j - δ_j^j (pair (i, j) vs j alone), at step {at}",
        ("brute_force", "positive"): f"A_ij = max(0, δ_ij^j - δ_j^j) (pair (i, j) vs j alone), at step {at}",
        ("brute_force", "lego"): (
            f"A_ij = {LEGO_EDGE_WEIGHT} if training on (i, j) reaches loss {edge['target_loss']} on j in fewer steps "
            "than j alone, else 0"
        ),
    }
    text = descriptions[(method, edge["edge_rule"])]
    return text if edge["diagonal"] is None else f"{text}; A_jj = {edge['diagonal']}"


# ----- files --------------------------------------------------------------------------------------------------------


def _run_path(output_dir: Path, run: GraphRun) -> Path:
    return output_dir / RUNS_DIR / f"{run.id}.json"


def _missing_runs(output_dir: Path, plan: list[GraphRun]) -> list[str]:
    return [run.id for run in plan if not _run_path(output_dir, run).is_file()]


def _load_run(output_dir: Path, run: GraphRun, identity_hash: str) -> dict[str, Any]:
    path = _run_path(output_dir, run)
    record = json.loads(path.read_text())
    if record.get("identity_hash") != identity_hash or record.get("train_skills") != list(run.train_skills):
        raise ValueError(f"{path} was written by another learn_graph configuration; remove it to train it again")
    return record


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    value = value.value if isinstance(value, Enum) else value
    return value if isinstance(value, (bool, int, float, str, type(None))) else str(value)


def _read_config(output_dir: Path) -> dict[str, Any]:
    path = output_dir / CONFIG_NAME
    if not path.is_file():
        raise ValueError(f"{output_dir} holds no {CONFIG_NAME}: it is not a learn_graph output directory")
    return json.loads(path.read_text())


def _write_config(output_dir: Path, config: dict[str, Any]) -> None:
    """Record the configuration; an existing one must have the same identity, or its runs would be mixed in."""
    path = output_dir / CONFIG_NAME
    if path.is_file():
        stored = json.loads(path.read_text())["identity"]
        new = config["identity"]
        differ = [key for key in new if stored.get(key) != new[key]]
        if differ:
            details = "; ".join(f"{key}: {stored.get(key)!r} there, {new[key]!r} now" for key in differ)
            raise ValueError(
                f"{output_dir} holds runs of another learn_graph configuration ({details}); use another output_dir "
                "or delete it"
            )
    atomic_write_json(path, config, indent=1)
