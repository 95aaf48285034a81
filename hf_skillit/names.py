"""Skill names: the one check of a list of skill names, shared by graphs, skill sets, mixers and recipes.

A skill name is a non-empty string; a list of them is ordered and has no duplicates (the order is the order of
the graph's rows or columns and of a mixture's entries). A bare string is refused, because it would otherwise
become one skill per character.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = [
    "SkillsMismatchError",
    "compare_skills",
    "UnknownSkillsError",
    "check_known_skills",
    "check_skill_name",
    "check_skill_names",
    "duplicate_names",
]


class UnknownSkillsError(ValueError):
    """Names that are not among the known skills; `unknown` and `known` let a caller word its own hint."""

    def __init__(self, message: str, unknown: Sequence[str], known: Sequence[str]) -> None:
        super().__init__(message)
        self.unknown = list(unknown)
        self.known = list(known)


class SkillsMismatchError(ValueError):
    """Two lists of skills that should be the same set are not: `missing` from one, `extra` in it."""

    def __init__(self, message: str, missing: Sequence[str], extra: Sequence[str]) -> None:
        super().__init__(message)
        self.missing = list(missing)
        self.extra = list(extra)


def duplicate_names(names: Iterable[str]) -> list[str]:
    """The names that occur more than once, in order of first appearance."""
    return [name for name, count in Counter(names).items() if count > 1]


def compare_skills(given: Iterable[str], expected: Iterable[str]) -> tuple[list[str], list[str]]:
    """(missing, extra): the `expected` names not `given` (in expected order), the `given` names not expected."""
    given, expected = list(given), list(expected)
    given_set, expected_set = set(given), set(expected)
    return [name for name in expected if name not in given_set], [name for name in given if name not in expected_set]


def check_skill_name(name: object, what: str) -> str:
    """`name` if it is a non-empty string; else a ValueError naming `what` ("training", "evaluation", ...)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} skill names must be non-empty strings, got {name!r}")
    return name


def check_skill_names(names: Sequence[str], what: str) -> tuple[str, ...]:
    """`names` as a tuple, checked: a sequence (not a string) of at least one non-empty name, no duplicates."""
    if isinstance(names, str):
        raise ValueError(f"{what} skills must be a sequence of names, got the string {names!r}")
    names = tuple(names)
    if not names:
        raise ValueError(f"the graph needs at least one {what} skill")
    for name in names:
        check_skill_name(name, what)
    if dupes := duplicate_names(names):
        raise ValueError(f"duplicate {what} skill names: {dupes}")
    return names


def check_known_skills(given: Sequence[str], known: Sequence[str], what: str) -> list[int]:
    """Positions of the `given` names in `known`; an `UnknownSkillsError` naming those that are not there."""
    if isinstance(given, str):
        raise ValueError(f"{what} skills must be a sequence of names, got the string {given!r}")
    position = {name: i for i, name in enumerate(known)}
    if unknown := [name for name in given if name not in position]:
        raise UnknownSkillsError(
            f"unknown {what} skills {unknown}; the graph's {what} skills: {list(known)}", unknown, known
        )
    return [position[name] for name in given]
