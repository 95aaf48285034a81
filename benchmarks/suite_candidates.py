"""Candidate skill suites tried by ``suite_search.py`` (issue 11). Every prompt names its skill, uses the
synthetic tokenizer's words and puts each operand at a fixed position. The suite that was chosen lives in
``hf_skillit.synthetic``; the rest stay here as the record of what was tried."""

from __future__ import annotations

import random
import string

_PERM: dict[int, list[int]] = {}


def _perm(symbols: int) -> list[int]:
    # One fixed permutation per alphabet size (a "lookup table" the model has to learn), without fixed points.
    if symbols not in _PERM:
        r = random.Random(1234)
        while True:
            p = list(range(symbols))
            r.shuffle(p)
            if all(p[i] != i for i in range(symbols)):
                break
        _PERM[symbols] = p
    return _PERM[symbols]


def carry(rng: random.Random, skill: int, base: int, digits: int) -> dict:
    """Little-endian addition in ``base``: skill i asks sum digit i-1 (skill digits+1 = the final carry)."""
    a = [rng.randrange(base) for _ in range(digits)]
    b = [rng.randrange(base) for _ in range(digits)]
    s, c = [], 0
    for i in range(digits):
        t = a[i] + b[i] + c
        s.append(t % base)
        c = t // base
    s.append(c)
    prompt = f"{' '.join(map(str, a))} + {' '.join(map(str, b))} , A {skill - 1} ="
    return {"prompt": prompt, "answer": str(s[skill - 1]), "skill": skill}


def compose(rng: random.Random, skill: int, symbols: int, k: int) -> dict:
    """Skill i: apply a fixed permutation i times to one symbol; i is written in the prompt."""
    p = _perm(symbols)
    x = rng.randrange(symbols)
    y = x
    for _ in range(skill):
        y = p[y]
    return {"prompt": f"{x} , A {skill} =", "answer": str(y), "skill": skill}


def prefix(rng: random.Random, skill: int, base: int, digits: int) -> dict:
    """Skill i: (x_0 + ... + x_i) mod base over ``digits`` random digits; i is written in the prompt."""
    x = [rng.randrange(base) for _ in range(digits)]
    return {
        "prompt": f"{' '.join(map(str, x))} , A {skill} =",
        "answer": str(sum(x[: skill + 1]) % base),
        "skill": skill,
    }


def lego(rng: random.Random, skill: int, k: int) -> dict:
    """LEGO chain of k variables, the queried variable's depth written in the prompt (``A depth name =``)."""
    names = rng.sample(string.ascii_lowercase, k)
    vals = [rng.randint(0, 1)]
    clauses = [f"{names[0]} = val {vals[0]}"]
    for i in range(1, k):
        neg = rng.random() < 0.5
        vals.append(vals[i - 1] ^ neg)
        clauses.append(f"{names[i]} = {'not' if neg else 'val'} {names[i - 1]}")
    rng.shuffle(clauses)
    return {
        "prompt": f"{' , '.join(clauses)} . A {skill} {names[skill - 1]} =",
        "answer": str(vals[skill - 1]),
        "skill": skill,
    }


SUITES = {"carry": carry, "compose": compose, "prefix": prefix, "lego": lego}
SUITE_ARGS = {"carry": ("base", "digits"), "compose": ("symbols", "k"), "prefix": ("base", "digits"), "lego": ("k",)}


def num_skills(task: str, **kw) -> int:
    return {
        "carry": lambda: kw["digits"] + 1,
        "compose": lambda: kw["k"],
        "prefix": lambda: kw["digits"] - 1,
        "lego": lambda: kw["k"],
    }[task]()


_TABLE: dict[int, list[list[int]]] = {}


def _table(base: int) -> list[list[int]]:
    # A fixed random operation T(y, x) on base symbols, redrawn until it is NOT a Latin square: then each argument
    # alone carries information about T (no parity-like plateau, unlike a sum mod base).
    if base not in _TABLE:
        r = random.Random(4321)
        while True:
            t = [[r.randrange(base) for _ in range(base)] for _ in range(base)]
            latin = all(len(set(row)) == base for row in t) and all(
                len({t[y][x] for y in range(base)}) == base for x in range(base)
            )
            if not latin and all(any(t[y][x] == v for y in range(base) for x in range(base)) for v in range(base)):
                break
        _TABLE[base] = t
    return _TABLE[base]


def fold(rng: random.Random, skill: int, base: int, digits: int) -> dict:
    """Left fold of a fixed table T over x_0..x_{digits-1}: y_0 = x_0, y_i = T(y_{i-1}, x_i); skill i asks y_i."""
    t = _table(base)
    x = [rng.randrange(base) for _ in range(digits)]
    y = x[0]
    for i in range(1, skill + 1):
        y = t[y][x[i]]
    return {"prompt": f"{' '.join(map(str, x))} , A {skill} =", "answer": str(y), "skill": skill}


SUITES["fold"] = fold
SUITE_ARGS["fold"] = ("base", "digits")
_N = num_skills


def num_skills(task: str, **kw) -> int:  # noqa: F811
    return kw["digits"] - 1 if task == "fold" else _N(task, **kw)


def foldk(rng: random.Random, skill: int, base: int, digits: int, k: int) -> dict:
    """``fold`` with more symbols shown than the deepest skill reads (``digits`` shown, skills 1..3): every
    skill's answer is then a function of a prefix that also occurs in training with other trailing symbols."""
    return fold(rng, skill, base, digits)


SUITES["foldk"] = foldk
SUITE_ARGS["foldk"] = ("base", "digits", "k")
_N2 = num_skills


def num_skills(task: str, **kw) -> int:  # noqa: F811
    return kw["k"] if task == "foldk" else _N2(task, **kw)
