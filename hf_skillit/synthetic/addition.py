"""Digit-addition synthetic with the skills of Skill-It (arXiv 2307.14430, §2.2): skill ``"i"`` asks for the
i-th digit of the sum counted from the ones digit (skill ``"1"`` = ``A 0`` = ones, ``"2"`` = ``A 1`` = tens, ...).

Text format (every token separated by one space)::

    Input : A = 1 0 6 + 0 7 1 , A 0 = ? Output : 7 .

Operands are zero-padded to ``digits`` digits. With ``reverse=True`` both operands are written ones digit
first (``A = 6 0 1 + 1 7 0``), which puts the digits that a sum digit depends on next to each other's
position in the operand. ``prompt`` ends with ``Output :``, ``answer`` is the digit and ``text`` is
``prompt + " " + answer + " ."``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .lego import rows_to_dataset, skill_counts


def addition_skills(digits: int = 3) -> list[str]:
    """Skill names of an addition dataset: ``"1"`` (ones digit) .. ``str(digits)``."""
    return [str(i) for i in range(1, digits + 1)]


def addition_sample(rng: random.Random, skill: int, digits: int = 3, reverse: bool = False) -> dict[str, str]:
    """One sample asking for digit ``skill - 1`` (0 = ones) of the sum of two random ``digits``-digit numbers."""
    a, b = rng.randrange(10**digits), rng.randrange(10**digits)
    order = slice(None, None, -1) if reverse else slice(None)
    a_text, b_text = (" ".join(f"{x:0{digits}d}"[order]) for x in (a, b))
    position = skill - 1
    prompt = f"Input : A = {a_text} + {b_text} , A {position} = ? Output :"
    answer = str((a + b) // 10**position % 10)
    return {"text": f"{prompt} {answer} .", "prompt": prompt, "answer": answer, "skill": str(skill)}


@rows_to_dataset
def make_addition(
    n: int,
    digits: int = 3,
    proportions: Sequence[float] | None = None,
    seed: int = 0,
    reverse: bool = False,
) -> list[dict[str, str]]:
    """``n`` addition samples with columns ``text``, ``prompt``, ``answer`` and ``skill`` (``"1"`` .. ``digits``).

    ``proportions`` (one weight per skill, default uniform) sets exact counts per skill by the largest-remainder
    rule (the paper's random baseline uses ``[13, 14, 18]``). Deterministic in its arguments.
    """
    if not 1 <= digits <= 9:
        raise ValueError(f"digits must be between 1 and 9, got {digits}")
    rng = random.Random(seed)
    skills = [s for s, c in enumerate(skill_counts(n, digits, proportions), start=1) for _ in range(c)]
    rng.shuffle(skills)
    return [addition_sample(rng, s, digits, reverse) for s in skills]
