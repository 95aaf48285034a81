"""The edge rules of graph learning: which short runs to train, and how their loss curves become the skills graph.

Pure numpy, no torch: [`plan_runs`] lists the runs of Algorithm 2 (brute force: each evaluation skill alone and
each pair) or Algorithm 3 (approximate: each training skill alone) of the Skill-It paper; [`measure_runs`] reads
their loss curves into loss changes δ (and, for the LEGO rule, steps to a target loss); [`edge_matrix`] turns those
into the matrix A with an edge rule; [`describe_rule`] says in words what was computed. [`check_settings`] checks
every setting of a graph-learning run once, for `learn_graph` and for a recipe's `learn_graph:` section alike.

How to add an edge rule: add its name to `EDGE_RULES` (and to `_BRUTE_FORCE_ONLY` if it compares pair runs with
single runs), compute it in `edge_matrix` from the measurements (add what it needs to `measure_runs`), and describe
it in `describe_rule`. `hf_skillit.graph_learning` trains the runs and calls these functions.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "EDGE_RULES",
    "LEGO_EDGE_WEIGHT",
    "METHODS",
    "GraphRun",
    "GraphSettingsError",
    "check_settings",
    "describe_rule",
    "edge_matrix",
    "measure_runs",
    "plan_runs",
    "resolve_eval_skills",
]

logger = logging.getLogger(__name__)

METHODS = ("brute_force", "approximate")
EDGE_RULES = ("delta", "delta_diff", "positive", "lego")
# Rules that compare a pair run with the single run of its evaluation skill exist only for Algorithm 2.
_BRUTE_FORCE_ONLY = ("delta_diff", "lego")
_DEFAULT_EDGE_RULE = {"brute_force": "delta_diff", "approximate": "delta"}
LEGO_EDGE_WEIGHT = 0.5  # the paper's LEGO/addition edge weight (Appendix C.2, Figures 10 and 11)


class GraphSettingsError(ValueError):
    """A graph-learning setting that cannot work. The message names Python arguments; `recipe_message` words the
    same finding with the recipe's keys (`learn_graph.<key>`), for the recipe layer to report."""

    def __init__(self, message: str, recipe_message: str | None = None) -> None:
        super().__init__(message)
        self.recipe_message = recipe_message


def _check_choice(value: object, choices: Sequence[str], what: str) -> None:
    if value not in choices:
        raise GraphSettingsError(
            f"unknown {what} {value!r}; choose one of {', '.join(choices)}",
            f"learn_graph.{what} must be one of {', '.join(choices)}, got {value!r}",
        )


def _check_positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise GraphSettingsError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def check_settings(
    method: str,
    steps: int | None,
    eval_every: int | None = None,
    edge_rule: str | None = None,
    target_loss: float | None = None,
    diagonal: float | None = None,
    measure_at: int | None = None,
    num_shards: int = 1,
    shard_index: int = 0,
) -> dict[str, Any]:
    """Check the settings of a graph-learning run together; return them resolved.

    `steps` may be None while it is not known yet (a recipe's default is its `training.max_steps`): the checks that
    need it wait until it is given. Returns `method`, `steps`, `eval_every` (default: `steps`) and the edge
    settings `edge_rule` (default: the method's), `target_loss`, `diagonal`, `measure_at`.

    Raises:
        GraphSettingsError: naming the setting, with the recipe's wording in `recipe_message`.
    """
    _check_choice(method, METHODS, "method")
    if steps is not None:
        steps = _check_positive_int(steps, "steps")
    if eval_every is not None:
        eval_every = _check_positive_int(eval_every, "eval_every")
    if steps is not None:
        eval_every = steps if eval_every is None else eval_every
        if steps % eval_every:
            raise GraphSettingsError(
                f"eval_every={eval_every} does not divide steps={steps}: the loss curve needs equal intervals"
            )
    if edge_rule is not None:
        _check_choice(edge_rule, EDGE_RULES, "edge_rule")
    rule = _DEFAULT_EDGE_RULE[method] if edge_rule is None else edge_rule
    if method == "approximate" and rule in _BRUTE_FORCE_ONLY:
        raise GraphSettingsError(
            f"edge_rule={rule!r} compares pair runs with single runs: it needs method='brute_force' "
            "(approximate supports 'delta' and 'positive')",
            f"learn_graph.edge_rule {rule} needs method: brute_force (it compares pair runs with single runs, which "
            "only Algorithm 2 trains)",
        )
    lego_pairing = "learn_graph.target_loss goes with edge_rule: lego, and edge_rule: lego needs it"
    if rule == "lego":
        if target_loss is None or not math.isfinite(target_loss) or target_loss <= 0:
            raise GraphSettingsError(
                f"edge_rule='lego' needs a finite target_loss > 0 (paper: 0.01), got {target_loss!r}",
                lego_pairing if target_loss is None else None,
            )
        if measure_at is not None:
            raise GraphSettingsError(
                "edge_rule='lego' counts steps to target_loss over the whole run; drop measure_at"
            )
    elif target_loss is not None:
        raise GraphSettingsError(f"target_loss is only used by edge_rule='lego', not {rule!r}", lego_pairing)
    if diagonal is not None and not math.isfinite(diagonal):
        raise GraphSettingsError(f"diagonal must be a finite number, got {diagonal!r}")
    if measure_at is not None:
        _check_positive_int(measure_at, "measure_at")
        if steps is not None and (measure_at > steps or measure_at % eval_every):
            raise GraphSettingsError(
                f"measure_at={measure_at} must be a step of the loss curve: a multiple of eval_every={eval_every} "
                f"up to steps={steps}"
            )
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise GraphSettingsError(f"num_shards must be an integer >= 1, got {num_shards!r}")
    if isinstance(shard_index, bool) or not isinstance(shard_index, int) or not 0 <= shard_index < num_shards:
        raise GraphSettingsError(f"shard_index must be in [0, {num_shards}), got {shard_index!r}")
    return {
        "method": method,
        "steps": steps,
        "eval_every": eval_every,
        "edge_rule": rule,
        "target_loss": target_loss,
        "diagonal": diagonal,
        "measure_at": measure_at,
    }


# ----- runs ---------------------------------------------------------------------------------------------------------


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


def resolve_eval_skills(
    method: str, train_skills: Sequence[str], measured: Sequence[str], eval_skills: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The graph's columns: `eval_skills`, or by default the training skills (brute force) or every `measured` skill
    (approximate), checked: distinct, training skills for brute force, and each measured (validation data or an
    evaluator)."""
    if eval_skills is None:
        eval_skills = train_skills if method == "brute_force" else measured
    elif isinstance(eval_skills, str):
        raise ValueError(f"eval_skills must be a sequence of names, got the string {eval_skills!r}")
    eval_skills = tuple(eval_skills)
    if not eval_skills:
        raise ValueError("there are no evaluation skills: give eval_skills or validation data")
    if duplicates := sorted({s for s in eval_skills if eval_skills.count(s) > 1}):
        raise ValueError(f"eval_skills lists skills more than once: {duplicates}")
    if method == "brute_force" and (outside := [s for s in eval_skills if s not in train_skills]):
        raise ValueError(
            f"brute_force trains on pairs of evaluation and training skills, so the evaluation skills must be training "
            f"skills; {outside} are not (training skills: {list(train_skills)}). Use method='approximate' for "
            "evaluation skills disjoint from the training skills."
        )
    if unmeasured := [s for s in eval_skills if s not in measured]:
        raise ValueError(
            f"evaluation skills {unmeasured} have no validation data (skills with validation data or an evaluator: "
            f"{list(measured)})"
        )
    return eval_skills


# ----- measurements and edges ---------------------------------------------------------------------------------------


def measure_runs(
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


def edge_matrix(
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


def describe_rule(method: str, edge: Mapping[str, Any], steps: int) -> str:
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
