"""LEGO synthetic (Zhang et al., 2022) with the skills of Skill-It (arXiv 2307.14430, §2.2 and Appendix D.1).

A sample assigns binary values to k variables through k clauses, ``x = val 1`` (the root), ``y = val x`` (copy)
or ``y = not x`` (negation), shown in random order, then asks for one variable. Skill ``"i"`` is "the queried
variable is the i-th in the reasoning order".

Text format (every token separated by one space, so a word-level tokenizer reads it)::

    Input : b = not y , r = val 1 , m = val b , q = val m , y = not r . Output : b = 1 .

``prompt`` is everything up to and including ``Output : b =``, ``answer`` is the value (``"1"``) and ``text`` is
``prompt + " " + answer + " ."``.

Reasoning graphs over the variables numbered 1..k in reasoning order:

- ``"chain"``: i-1 -> i, so variable i needs i-1 resolution steps.
- ``"tree"``: the complete binary tree in heap order, parent(i) = i // 2 (edges 1->2, 1->3, 2->4, 2->5, 3->6, ...).
  For k=4 this is the tree of Appendix D.1 (1->2, 1->3, 2->4). Skill i is still node i, so skills 2 and 3 sit at
  the same depth; variable i needs floor(log2 i) resolution steps.
"""

from __future__ import annotations

import functools
import random
import string
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset

STRUCTURES = ("chain", "tree")


def rows_to_dataset(make_rows: Callable[..., list[dict[str, Any]]]) -> Callable[..., Dataset]:
    """A generator of rows as one returning a `datasets.Dataset` of them, with the same parameters; the rows alone
    stay reachable as its `rows` (`hf-skillit train --dry-run` counts a task's rows per skill without `datasets`,
    which takes a second to import)."""

    @functools.wraps(make_rows)
    def make(*args: Any, **kwargs: Any) -> Dataset:
        from datasets import Dataset

        return Dataset.from_list(make_rows(*args, **kwargs))

    make.rows = make_rows  # type: ignore[attr-defined]
    return make


def skill_counts(n: int, num_skills: int, proportions: Sequence[float] | None = None) -> list[int]:
    """Exact number of samples per skill: ``n`` split by ``proportions`` with the largest-remainder rule."""
    weights = [1.0] * num_skills if proportions is None else [float(p) for p in proportions]
    if len(weights) != num_skills or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"need {num_skills} non-negative proportions with a positive sum, got {proportions}")
    quotas = [n * w / sum(weights) for w in weights]
    counts = [int(q) for q in quotas]
    # Ties go to the earlier skill so that the split never depends on float noise between runs.
    by_remainder = sorted(range(num_skills), key=lambda i: (counts[i] - quotas[i], i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def lego_parent(i: int, structure: str = "chain") -> int | None:
    """Parent of variable ``i`` (1-based, reasoning order) in the reasoning graph; ``None`` for the root."""
    if i == 1:
        return None
    if structure == "chain":
        return i - 1
    if structure == "tree":
        return i // 2
    raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")


def lego_skills(k: int = 5) -> list[str]:
    """Skill names of a LEGO dataset with ``k`` variables: ``"1"`` .. ``"k"``."""
    return [str(i) for i in range(1, k + 1)]


def lego_sample(rng: random.Random, skill: int, k: int = 5, structure: str = "chain") -> dict[str, str]:
    """One sample whose queried variable is the ``skill``-th in reasoning order."""
    names = rng.sample(string.ascii_lowercase, k)
    values = [rng.randint(0, 1)]
    clauses = [f"{names[0]} = val {values[0]}"]
    for i in range(2, k + 1):
        parent = lego_parent(i, structure) - 1
        negate = rng.random() < 0.5
        values.append(values[parent] ^ negate)
        clauses.append(f"{names[i - 1]} = {'not' if negate else 'val'} {names[parent]}")
    rng.shuffle(clauses)
    query = names[skill - 1]
    prompt = f"Input : {' , '.join(clauses)} . Output : {query} ="
    answer = str(values[skill - 1])
    return {"text": f"{prompt} {answer} .", "prompt": prompt, "answer": answer, "skill": str(skill)}


@rows_to_dataset
def make_lego(
    n: int,
    k: int = 5,
    proportions: Sequence[float] | None = None,
    structure: str = "chain",
    seed: int = 0,
) -> list[dict[str, str]]:
    """``n`` LEGO samples with columns ``text``, ``prompt``, ``answer`` and ``skill`` (``"1"`` .. ``"k"``).

    ``proportions`` (one weight per skill, default uniform) sets the exact number of samples per skill by the
    largest-remainder rule; e.g. the paper's imbalanced random baseline is ``[1, 1, 1, 3, 5]``. Samples of all
    skills are shuffled together. The same arguments always give the same dataset.
    """
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    if not 1 <= k <= len(string.ascii_lowercase):
        raise ValueError(f"k must be between 1 and 26, got {k}")
    rng = random.Random(seed)
    skills = [s for s, c in enumerate(skill_counts(n, k, proportions), start=1) for _ in range(c)]
    rng.shuffle(skills)
    return [lego_sample(rng, s, k, structure) for s in skills]
