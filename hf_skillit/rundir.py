"""The run directory: every file name a Skill-It run or a graph-learning run writes, and how they are written and read.

A training run's `output_dir` holds:

- `skillit_trajectory.jsonl` ([`TRAJECTORY_NAME`]): one JSON line per finished round (its mixture `p`, the samples
  drawn per skill, the validation losses, the next mixture), appended by rank 0 at each round end. A crash while
  appending can leave a torn last line: [`read_trajectory`] drops it, so resume and plotting both see the rounds
  that were recorded whole.
- `checkpoint-<step>/` folders, each with `skillit_state.json` ([`STATE_NAME`]) next to the Trainer's files. A
  checkpoint is complete once the Trainer's `trainer_state.json` (written last) and ours are both whole JSON.
- after `hf-skillit train`: `recipe.yaml`, `summary.json`, `skills_graph.json` and the PNGs of `hf_skillit.plotting`.

A graph-learning `output_dir` (`hf_skillit.graph_learning`) holds `learn_graph.json`, `runs/<run>.json`, a scratch
`work/`, and, once every run exists, `measurements.json`, `graph.png` and `graph.json`.

Every whole-file write goes through [`atomic_write`] (write a temporary file in the same folder, fsync, rename), so
a reader, or a crash, never sees half a file. Only the trajectory is appended to.

This module imports nothing heavy (no torch, no transformers), so plotting and the CLI can read runs cheaply.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "CHECKPOINT_PREFIX",
    "GRAPH_JSON",
    "GRAPH_PNG",
    "LOSSES_PNG",
    "MIXING_LAW_PNG",
    "MIXTURE_PNG",
    "RECIPE_NAME",
    "STATE_NAME",
    "SUMMARY_NAME",
    "TRAJECTORY_NAME",
    "append_trajectory",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "check_fresh_output_dir",
    "checkpoint_folders",
    "is_complete_checkpoint",
    "last_complete_checkpoint",
    "load_run_record",
    "load_trajectory",
    "read_trajectory",
    "settings_hash",
    "truncate_trajectory",
    "write_settings",
]

logger = logging.getLogger(__name__)

# ----- names: training runs ----------------------------------------------------------------------------------------
TRAJECTORY_NAME = "skillit_trajectory.jsonl"
STATE_NAME = "skillit_state.json"  # inside each checkpoint folder
CHECKPOINT_PREFIX = "checkpoint"  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR: checkpoint-<step>
TRAINER_STATE_NAME = "trainer_state.json"  # transformers' own, written last into a checkpoint
RECIPE_NAME = "recipe.yaml"
SUMMARY_NAME = "summary.json"
GRAPH_JSON = "skills_graph.json"
MIXTURE_PNG = "skillit_mixture.png"
LOSSES_PNG = "skillit_losses.png"
GRAPH_PNG = "skillit_graph.png"
MIXING_LAW_PNG = "skillit_mixing_law.png"  # Aioli's estimated A of every round (`hf_skillit.plotting`)

# ----- names: graph-learning runs ----------------------------------------------------------------------------------
LEARN_GRAPH_CONFIG_NAME = "learn_graph.json"
LEARN_GRAPH_RUNS_DIR = "runs"
LEARN_GRAPH_WORK_DIR = "work"
LEARNED_GRAPH_NAME = "graph.json"
MEASUREMENTS_NAME = "measurements.json"
LEARNED_GRAPH_PNG = "graph.png"


# ----- writing -----------------------------------------------------------------------------------------------------


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Have `write(tmp)` write a temporary file beside `path`, then rename it onto `path` (creating the folder).

    The temporary file is fsynced before the rename and removed if `write` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Replace `path` with `text`, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | os.PathLike, payload: Any, indent: int | None = None) -> Path:
    """Replace `path` with `payload` as JSON, atomically."""
    return atomic_write_text(path, json.dumps(payload, indent=indent))


# ----- the trajectory ----------------------------------------------------------------------------------------------


def _parse_records(lines: Iterable[str], where: str) -> list[dict[str, Any]]:
    """JSON records, one a line; a line torn by a crash mid-append (necessarily the last one) is dropped."""
    lines = [line for line in lines if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ValueError(f"{where}, line {number}, is not JSON: the file is damaged") from None
            logger.warning("Dropping the torn last line of %s", where)
    return records


def read_trajectory(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rounds recorded in `run_dir/skillit_trajectory.jsonl`, in order ([] when there is no such file)."""
    path = Path(run_dir) / TRAJECTORY_NAME
    if not path.is_file():
        return []
    with open(path) as f:
        return _parse_records(f, str(path))


def load_trajectory(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Like [`read_trajectory`], for a directory that must hold a run: a ValueError if it holds no rounds."""
    path = Path(run_dir) / TRAJECTORY_NAME
    if not path.is_file():
        raise ValueError(f"{str(run_dir)!r} is not a Skill-It run directory: it has no {TRAJECTORY_NAME}")
    rounds = read_trajectory(run_dir)
    if not rounds:
        raise ValueError(f"{path} holds no rounds yet")
    return rounds


def append_trajectory(run_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one round's record as a JSON line."""
    with open(os.path.join(run_dir, TRAJECTORY_NAME), "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_trajectory(run_dir: str | os.PathLike, rounds_done: int) -> None:
    """Keep only rounds 1..`rounds_done` (a resumed run appends the later ones again); atomic."""
    path = Path(run_dir) / TRAJECTORY_NAME
    if not path.is_file():
        return
    kept = [json.dumps(record) + "\n" for record in read_trajectory(run_dir) if record["round"] <= rounds_done]
    atomic_write_text(path, "".join(kept))


def check_fresh_output_dir(
    output_dir: str | os.PathLike,
    overwrite: bool,
    *,
    where: str = "output_dir",
    advice: str = "resume it with train(resume_from_checkpoint=True), choose another output_dir, or set "
    "overwrite_output_dir=True",
) -> None:
    """Refuse to start a new run in a directory that holds another run (its trajectory or its checkpoints), unless
    `overwrite`.

    `where` names the setting and `advice` says how to proceed, in the caller's terms (Python or recipe).
    """
    if overwrite:
        return
    found = [TRAJECTORY_NAME] if (Path(output_dir) / TRAJECTORY_NAME).exists() else []
    found += checkpoint_folders(output_dir)[:3]
    if found:
        raise ValueError(f"{where} {os.fspath(output_dir)!r} holds another run ({', '.join(found)}); {advice}")


# ----- checkpoints -------------------------------------------------------------------------------------------------


def _is_json(path: str) -> bool:
    try:
        with open(path) as f:
            json.load(f)
    except (OSError, ValueError):
        return False
    return True


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """A checkpoint is complete once the Trainer's state (written last) and ours are both on disk, whole."""
    return _is_json(os.path.join(path, TRAINER_STATE_NAME)) and _is_json(os.path.join(path, STATE_NAME))


def checkpoint_folders(output_dir: str | os.PathLike) -> list[str]:
    """The names of the `checkpoint-<step>` folders in `output_dir`, newest (highest step) first."""
    if not os.path.isdir(output_dir):
        return []
    steps = []
    for name in os.listdir(output_dir):
        prefix, _, step = name.rpartition("-")
        if prefix == CHECKPOINT_PREFIX and step.isdigit() and os.path.isdir(os.path.join(output_dir, name)):
            steps.append((int(step), name))
    return [name for _, name in sorted(steps, reverse=True)]


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest checkpoint in `output_dir` that was fully written, skipping half-written ones."""
    for name in checkpoint_folders(output_dir):
        path = os.path.join(output_dir, name)
        if is_complete_checkpoint(path):
            return path
        logger.warning("Skipping incomplete checkpoint %s", path)
    return None


# ----- settings of a set of runs (graph learning, skill discovery) -------------------------------------------------


def settings_hash(identity: Any) -> str:
    """A short hash of the settings that decide what a set of runs measures (`identity`, JSON)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def write_settings(path: str | os.PathLike, record: dict[str, Any], what: str) -> None:
    """Write `record` (its `identity`, `identity_hash` and anything else) to `path`. A stored record of other
    settings is refused, naming each differing key: the runs already in the folder would be mixed in. `what` names
    those runs in the message (e.g. "runs of another learn_graph configuration")."""
    path = Path(path)
    if path.is_file():
        stored, new = json.loads(path.read_text())["identity"], record["identity"]
        differ = [key for key in new if stored.get(key) != new[key]]
        if differ:
            details = "; ".join(f"{key}: {stored.get(key)!r} there, {new[key]!r} now" for key in differ)
            raise ValueError(f"{path.parent} holds {what} ({details}); use another output_dir or delete it")
    atomic_write_json(path, record, indent=1)


def load_run_record(path: str | os.PathLike, identity_hash: str, **expected: Any) -> dict[str, Any]:
    """A finished run's record (`.json`, or `.npz` arrays), refused unless written with the settings whose hash is
    `identity_hash` (and with the `expected` values)."""
    path = Path(path)
    if path.suffix == ".npz":
        import numpy as np  # only skill discovery's runs are arrays; plotting and the CLI never load them

        with np.load(path) as arrays:
            record = {key: arrays[key] for key in arrays.files}
        record["identity_hash"] = str(record["identity_hash"])
    else:
        record = json.loads(path.read_text())
    if record.get("identity_hash") != identity_hash or any(record.get(k) != v for k, v in expected.items()):
        raise ValueError(f"{path} was written with other settings; remove it to train it again")
    return record
