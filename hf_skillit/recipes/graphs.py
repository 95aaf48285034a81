"""A recipe's skills graph: from a JSON file (`graph.path`), the LEGO reasoning graph built in code
(`graph.reasoning`) or an inline matrix (`graph.matrix`), checked against the data's skills, the evaluators' and
the mixer's needs (through the library's own checks: `SkillsGraph`, the mixer registry).

No torch here: the dry run (`hf_skillit.recipes.plan`) builds and checks the graph before any model library is
imported.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..graph import SkillsGraph
from ..mixer_registry import check_mixer_inputs
from ..names import SkillsMismatchError, UnknownSkillsError
from ..synthetic import lego_parent
from .schema import RecipeError, recipe_error

if TYPE_CHECKING:
    from ..skills import SkillSet
    from .sections import Recipe

__all__ = ["build_graph", "lego_reasoning_graph"]


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


def build_graph(recipe: Recipe, skills: SkillSet, evaluators: Sequence[Any] = ()) -> SkillsGraph | None:
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
        try:
            graph.check_train_skills(skills.train_skills)
        except SkillsMismatchError as err:
            raise RecipeError(
                f"{where} does not match the data's training skills: "
                f"not in the graph {err.missing}, in the graph but not in the data {err.extra}"
            ) from None
    evaluable = list(skills.eval_skills) + [s for e in evaluators for s in e.skills]
    if graph is not None and (no_data := [s for s in graph.eval_skills if s not in evaluable]):
        raise RecipeError(
            f"the graph's evaluation skill(s) {no_data} have neither validation data nor an lm_eval task "
            f"(evaluation skills: {evaluable})"
        )
    try:
        check_mixer_inputs(
            training.mixing,
            graph,
            skills.train_skills,
            training.target_skills,
            graph_hint="set graph.path, graph.matrix or (LEGO) graph.reasoning",
        )
    except UnknownSkillsError as err:
        target = err.unknown[0]
        close = difflib.get_close_matches(target, err.known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise RecipeError(
            f"training.target_skills: unknown skill {target!r}; {hint}evaluation skills: {err.known}"
        ) from None
    except ValueError as err:
        raise recipe_error(err, "training") from None
    return graph
