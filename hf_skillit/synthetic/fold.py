"""Table-fold synthetic: ordered skills that a tiny model learns on a CPU in minutes (issue 11).

A sample shows ``digits`` random symbols ``x_0 .. x_{digits-1}`` in ``base`` and asks for the left fold of a fixed
operation table ``T`` over a prefix of them: ``y_0 = x_0``, ``y_i = T[y_{i-1}][x_i]``. Skill ``"i"`` asks ``y_i``
(``i = 1 .. digits - 1``) and writes ``i`` in the prompt, so the model never has to guess which skill a sample is::

    2 1 3 0 , A 2 =  0          (base 4: y_1 = T[2][1] = 0, y_2 = T[0][3] = 0)

Why this suite (benchmarks/RESULTS.md, "Issue 11: a CPU-learnable skill suite"): on the paper's LEGO and addition
a tiny from-scratch model sits on a plateau, because every answer there is a parity or a sum modulo the base, and
no single input tells anything about it until the whole composition is found. ``T`` is drawn at random and kept
only if it is *not* a Latin square, so each argument alone already says something about ``T``'s value: the losses
fall from the first steps, skill 1 is a lookup of two fixed positions, and skill ``i`` composes ``i`` lookups, so
it is harder and built from the shallower skills (the paper's ordered skills, §2).

Text format (every token separated by one space, words of the synthetic tokenizer): ``prompt`` is
``"x_0 .. x_{digits-1} , A i ="``, ``answer`` the digit ``y_i`` and ``text`` ``prompt + " " + answer``. Every
symbol is shown whichever the skill, so each skill has ``base ** digits`` distinct prompts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .lego import rows_to_dataset, skill_counts

TABLE_SEED = 4321  # the table every recipe and result of this suite uses


def fold_table(base: int = 4, table_seed: int = TABLE_SEED) -> list[list[int]]:
    """The fixed operation ``T`` (``T[y][x]``): uniform random entries, redrawn until every symbol occurs as a
    value and ``T`` is not a Latin square. Deterministic in ``(base, table_seed)``.

    For the default base 4 it is ``[[2, 0, 3, 0], [1, 2, 0, 0], [1, 0, 3, 2], [3, 1, 3, 3]]``.
    """
    if not 2 <= base <= 10:
        raise ValueError(f"base must be between 2 and 10 (one digit token per symbol), got {base}")
    rng = random.Random(table_seed)
    while True:
        table = [[rng.randrange(base) for _ in range(base)] for _ in range(base)]
        rows_latin = all(len(set(row)) == base for row in table)
        cols_latin = all(len({table[y][x] for y in range(base)}) == base for x in range(base))
        onto = {v for row in table for v in row} == set(range(base))
        if onto and not (rows_latin and cols_latin):
            return table


def fold_skills(digits: int = 5, num_skills: int | None = None) -> list[str]:
    """Skill names of a fold dataset: ``"1"`` .. ``str(num_skills)`` (default ``digits - 1``, the deepest fold the
    shown symbols allow)."""
    num_skills = digits - 1 if num_skills is None else num_skills
    if not 1 <= num_skills <= digits - 1:
        raise ValueError(f"num_skills must be between 1 and digits - 1 = {digits - 1}, got {num_skills}")
    return [str(i) for i in range(1, num_skills + 1)]


def fold_sample(
    rng: random.Random, skill: int, base: int = 4, digits: int = 5, table: list[list[int]] | None = None
) -> dict[str, str]:
    """One sample of skill ``skill``: ``y_skill`` of the fold of ``table`` (default ``fold_table(base)``)."""
    table = table or fold_table(base)
    x = [rng.randrange(base) for _ in range(digits)]
    y = x[0]
    for i in range(1, skill + 1):
        y = table[y][x[i]]
    prompt = f"{' '.join(map(str, x))} , A {skill} ="
    return {"text": f"{prompt} {y}", "prompt": prompt, "answer": str(y), "skill": str(skill)}


@rows_to_dataset
def make_fold(
    n: int,
    base: int = 4,
    digits: int = 5,
    num_skills: int | None = 3,
    proportions: Sequence[float] | None = None,
    seed: int = 0,
    table_seed: int = TABLE_SEED,
) -> list[dict[str, str]]:
    """``n`` fold samples with columns ``text``, ``prompt``, ``answer`` and ``skill`` (``"1"`` .. ``num_skills``).

    ``num_skills`` (default 3; ``None``: ``digits - 1``) is the deepest skill. With fewer skills than the shown
    symbols allow, every skill's answer depends on a prefix that also occurs, with other trailing symbols, in rows
    other than the held-out validation rows. ``proportions`` (one weight per skill, default uniform) sets exact
    counts per skill by the largest-remainder rule. Deterministic in its arguments.
    """
    if not 2 <= digits <= 10:
        raise ValueError(f"digits must be between 2 and 10 (skill i is written as one digit token), got {digits}")
    names = fold_skills(digits, num_skills)
    table = fold_table(base, table_seed)
    rng = random.Random(seed)
    skills = [s for s, c in enumerate(skill_counts(n, len(names), proportions), start=1) for _ in range(c)]
    rng.shuffle(skills)
    return [fold_sample(rng, s, base, digits, table) for s in skills]
