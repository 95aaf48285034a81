"""The skills graph: a k x m matrix of how much each training skill helps each evaluation skill."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .names import SkillsMismatchError, check_known_skills, check_skill_names, compare_skills
from .rundir import atomic_write_text

__all__ = ["SkillsGraph"]


def _permutation(given: Sequence[str], known: tuple[str, ...], what: str) -> list[int]:
    given = check_skill_names(given, what)
    missing, extra = compare_skills(given, known)
    if missing or extra:
        raise ValueError(
            f"{what} skills must be a permutation of the graph's: missing {missing}, not in the graph {extra}"
        )
    return check_known_skills(given, known, what)


class SkillsGraph:
    """Adjacency submatrix `A` of the skills graph (paper §3.1, Table 1).

    `A[i, j]` is how much training skill i helps evaluation skill j. Entries may be negative (the raw loss changes
    measured by graph learning can be). With `eval_skills` left out, the evaluation skills are the training skills
    (continual pre-training, k x k).

    Args:
        matrix: k x m array-like of finite numbers; stored as a read-only float64 copy.
        train_skills: the k training skill names (rows), in order.
        eval_skills: the m evaluation skill names (columns), in order. Defaults to `train_skills`.
        metadata: provenance (method, steps, base model, seed...), kept by `save`/`load`.
    """

    def __init__(
        self,
        matrix: ArrayLike,
        train_skills: Sequence[str],
        eval_skills: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.train_skills = check_skill_names(train_skills, "training")
        self.eval_skills = self.train_skills if eval_skills is None else check_skill_names(eval_skills, "evaluation")
        matrix = np.array(matrix, dtype=np.float64)
        expected = (len(self.train_skills), len(self.eval_skills))
        if matrix.shape != expected:
            raise ValueError(
                f"matrix has shape {matrix.shape} but there are {expected[0]} training skills and {expected[1]} "
                f"evaluation skills (expected shape {expected})"
            )
        if not np.isfinite(matrix).all():
            i, j = np.argwhere(~np.isfinite(matrix))[0]
            raise ValueError(
                f"matrix entry for training skill {self.train_skills[i]!r} -> evaluation skill "
                f"{self.eval_skills[j]!r} is {matrix[i, j]}; entries must be finite"
            )
        matrix.flags.writeable = False
        self.matrix = matrix
        self.metadata = dict(metadata or {})

    @classmethod
    def identity(cls, skills: Sequence[str]) -> SkillsGraph:
        """Each skill helps only itself: the no-graph ablation (paper Appendix D.5)."""
        skills = check_skill_names(skills, "training")
        return cls(np.eye(len(skills)), skills, metadata={"method": "identity"})

    @classmethod
    def complete(cls, train_skills: Sequence[str], eval_skills: Sequence[str] | None = None) -> SkillsGraph:
        """Every training skill helps every evaluation skill equally (all ones)."""
        train_skills = check_skill_names(train_skills, "training")
        eval_skills = train_skills if eval_skills is None else check_skill_names(eval_skills, "evaluation")
        return cls(np.ones((len(train_skills), len(eval_skills))), train_skills, eval_skills, {"method": "complete"})

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    def restrict(self, eval_skills: Sequence[str]) -> SkillsGraph:
        """Keep only the columns of `eval_skills`, in that order (fine-tuning targets)."""
        columns = check_known_skills(eval_skills, self.eval_skills, "evaluation")
        return SkillsGraph(self.matrix[:, columns], self.train_skills, eval_skills, self.metadata)

    def reorder(self, train_skills: Sequence[str], eval_skills: Sequence[str] | None = None) -> SkillsGraph:
        """The same graph with rows (and columns, if `eval_skills` is given) in the given name order."""
        rows = _permutation(train_skills, self.train_skills, "training")
        if eval_skills is None:
            return SkillsGraph(self.matrix[rows], train_skills, self.eval_skills, self.metadata)
        columns = _permutation(eval_skills, self.eval_skills, "evaluation")
        return SkillsGraph(self.matrix[np.ix_(rows, columns)], train_skills, eval_skills, self.metadata)

    def prerequisites(self, eval_skills: Sequence[str] | None = None) -> tuple[str, ...]:
        """Training skills with a positive edge into any of `eval_skills` (default: all), in training order.

        This is S_prereq = {s_train,i : exists j with A_ij > 0} of paper §3.3.1.
        """
        columns = (
            slice(None) if eval_skills is None else check_known_skills(eval_skills, self.eval_skills, "evaluation")
        )
        has_edge = (self.matrix[:, columns] > 0).any(axis=1)
        return tuple(name for name, edge in zip(self.train_skills, has_edge, strict=True) if edge)

    def check_train_skills(self, train_skills: Sequence[str]) -> None:
        """Check that the graph's rows are exactly the data's training skills `train_skills` (in any order).

        Raises:
            SkillsMismatchError: naming the skills missing from the graph and those without training data.
        """
        missing, extra = compare_skills(self.train_skills, train_skills)
        if missing or extra:
            parts = [f"not in the graph: {', '.join(missing)}" if missing else ""]
            parts.append(f"in the graph but without training data: {', '.join(extra)}" if extra else "")
            raise SkillsMismatchError(
                "the graph's training skills do not match the data's: " + "; ".join(p for p in parts if p),
                missing,
                extra,
            )

    def check_targets(self, targets: Sequence[str], *, need_prerequisites: bool = False) -> None:
        """Check fine-tuning targets: they must be evaluation skills (`UnknownSkillsError` otherwise) and, with
        `need_prerequisites`, each needs a positive entry in its column, or Skill-It's mixture could never respond to
        it (paper §3.3.1: the targets and their prerequisites are what fine-tuning samples)."""
        check_known_skills(targets, self.eval_skills, "evaluation")
        if need_prerequisites and (orphans := [t for t in targets if not self.prerequisites([t])]):
            raise ValueError(
                f"target skill(s) {', '.join(map(repr, orphans))} have no positive entry in their graph column "
                "(no training skill, itself included, helps them): Skill-It's mixture could never respond to them"
            )

    def density(self) -> float:
        """Fraction of positive entries.

        When the evaluation skills are the training skills (in any order), the entries of a skill onto itself are
        left out, so this is the fraction of edges between distinct skills; otherwise all k x m entries count.
        A 1 x 1 square graph has no such edge and a density of 0.
        """
        positive = self.matrix > 0
        if set(self.train_skills) == set(self.eval_skills):
            rows, columns = np.array(self.train_skills, dtype=object), np.array(self.eval_skills, dtype=object)
            distinct = rows[:, None] != columns[None, :]
            return float(positive[distinct].mean()) if distinct.any() else 0.0
        return float(positive.mean())

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_skills": list(self.train_skills),
            "eval_skills": list(self.eval_skills),
            "matrix": self.matrix.tolist(),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SkillsGraph:
        """Inverse of `to_dict`; `eval_skills` and `metadata` are optional (hand-written graphs)."""
        for key in ("train_skills", "matrix"):
            if key not in data:
                raise ValueError(f"skills graph data has no {key!r} key")
        return cls(data["matrix"], data["train_skills"], data.get("eval_skills"), data.get("metadata"))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the graph as JSON (names, matrix, metadata), atomically."""
        path = Path(path)
        if path.suffix != ".json":
            raise ValueError(f"skills graphs are saved as .json, got {str(path)!r}")
        # Write-then-rename, so a reader (or a crash) never sees half a file.
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        train_skills: Sequence[str] | None = None,
        eval_skills: Sequence[str] | None = None,
    ) -> SkillsGraph:
        """Read a graph from `.json` (as written by `save`) or `.npy` (a bare matrix; names required).

        For `.json`, names given here must be the file's names; the graph is returned in the given order.
        For `.npy`, `train_skills` is required and `eval_skills` defaults to it.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"skills graph file not found: {str(path)!r}")
        if path.suffix == ".npy":
            if train_skills is None:
                raise ValueError(
                    f"{str(path)!r} holds no skill names: pass train_skills (and eval_skills if different)"
                )
            return cls(np.load(path, allow_pickle=False), train_skills, eval_skills, {"source": str(path)})
        if path.suffix != ".json":
            raise ValueError(f"unknown skills graph format {path.suffix!r} for {str(path)!r}: expected .json or .npy")

        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{str(path)!r} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{str(path)!r} must hold a JSON object, got {type(data).__name__}")
        try:
            graph = cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{str(path)!r}: {err}") from err
        for given, stored, what in (
            (train_skills, graph.train_skills, "training"),
            (eval_skills, graph.eval_skills, "evaluation"),
        ):
            if given is not None and set(given) != set(stored):
                raise ValueError(
                    f"{what} skills differ from those in {str(path)!r}: not in the file "
                    f"{[s for s in given if s not in stored]}, only in the file {[s for s in stored if s not in set(given)]}"
                )
        return graph.reorder(graph.train_skills if train_skills is None else train_skills, eval_skills)

    def __repr__(self) -> str:
        k, m = self.shape
        return f"SkillsGraph({k} training x {m} evaluation skills, density={self.density():.2f}, metadata={self.metadata})"
