"""Checkpoints and resume of a Skill-It run: the round state, what a checkpoint holds beyond the Trainer's, and how a
run continues.

[`RoundState`] is where a run is between two optimizer steps: the rounds done, the mixtures so far (p_1 ... p_t),
every skill's stream position at the current data unit's start (a unit is a round, or a part of one for a mixer
with probe phases: `hf_skillit.probing`), the samples counted in the unfinished round, the current round's probes
and the losses measured before the first step. `hf_skillit.trainer.SkillItTrainerMixin` owns one and saves it, with the
mixer's state, the global step and the layout (rounds, steps and samples per round, data seed) a resumed run must
share for its data to continue exactly, as `skillit_state.json` (`hf_skillit.rundir.STATE_NAME`), written before the
Trainer's own `trainer_state.json`, whose presence marks the checkpoint complete. [`read_checkpoint_state`] checks a
checkpoint against the run that resumes it: the same skills, the same layout, no replayed data.

A new run starts from a clean output directory: [`start_fresh_run`] refuses a directory that holds another run
unless `overwrite_output_dir`, and then removes that run's trajectory *and its checkpoints*, so that
`resume_from_checkpoint=True` can never continue the overwritten run (issue 22, item 3).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import safetensors
import torch
from transformers import PreTrainedModel
from transformers.core_model_loading import revert_weight_conversion
from transformers.utils import SAFE_WEIGHTS_NAME

from .rundir import STATE_NAME, TRAJECTORY_NAME, check_fresh_output_dir, checkpoint_folders
from .streams import StreamState

__all__ = ["RoundState", "load_renamed_weights", "read_checkpoint_state", "run_layout", "start_fresh_run"]

logger = logging.getLogger(__name__)


@dataclass
class RoundState:
    """Where a Skill-It run is: identical on every process, except `round_counts` (this process's own samples of
    the unfinished round, per training skill).

    Args:
        train_skills (`tuple[str, ...]`): the training skills, in the mixer's order.
        p_history (`list[np.ndarray]`): the mixture of every round started so far (p_1 first).
        stream ([`StreamState`]): every skill's position at the current round's start.
        round_counts (`torch.Tensor`): samples per skill this process trained on in the unfinished round.
        round_tokens (`torch.Tensor`): their trained tokens (labels != -100), per skill.
        rounds_done (`int`, *optional*, defaults to 0): rounds finished.
        initial_eval_loss (`dict[str, float]`, *optional*): the evaluation before the first step, if any.
        probes (`list[dict]`, *optional*): the current round's probe phases (`mixture`, `steps`, `label`), for a
            mixer with probes (`hf_skillit.probing`); empty otherwise.
        probe_records (`list[dict]`, *optional*): the finished probes of the current round, as the trajectory
            records them.
        counted (`list[int]`, *optional*): the samples per skill of the current round up to the last unit end,
            summed across processes: the stream has advanced by them (all zeros when a unit is a round).
        counted_tokens (`list[int]`, *optional*): their tokens.
    """

    train_skills: tuple[str, ...]
    p_history: list[np.ndarray]
    stream: StreamState
    round_counts: torch.Tensor
    round_tokens: torch.Tensor
    rounds_done: int = 0
    initial_eval_loss: dict[str, float] | None = field(default=None)
    probes: list[dict[str, Any]] = field(default_factory=list)
    probe_records: list[dict[str, Any]] = field(default_factory=list)
    counted: list[int] = field(default_factory=list)
    counted_tokens: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        k = len(self.train_skills)
        self.counted = [int(c) for c in self.counted] or [0] * k
        self.counted_tokens = [int(c) for c in self.counted_tokens] or [0] * k

    @classmethod
    def fresh(cls, train_skills: Sequence[str], p_1: np.ndarray) -> RoundState:
        """A run before its first step, about to train round 1 on `p_1`."""
        k = len(train_skills)
        return cls(
            tuple(train_skills),
            [np.asarray(p_1, dtype=np.float64)],
            StreamState.fresh(k),
            torch.zeros(k, dtype=torch.long),
            torch.zeros(k, dtype=torch.long),
        )

    @property
    def p(self) -> np.ndarray:
        """The mixture of the current round."""
        return self.p_history[self.rounds_done]

    def to_dict(
        self, round_counts: Sequence[int] | None = None, round_tokens: Sequence[int] | None = None
    ) -> dict[str, Any]:
        """The JSON form (the keys of `skillit_state.json` it owns); `round_counts` and `round_tokens` replace this
        process's (a checkpoint stores their sums across processes)."""
        counts = self.round_counts.tolist() if round_counts is None else [int(c) for c in round_counts]
        tokens = self.round_tokens.tolist() if round_tokens is None else [int(c) for c in round_tokens]
        return {
            "rounds_done": self.rounds_done,
            "p_history": [p.tolist() for p in self.p_history],
            "stream": self.stream.to_dict(),
            "round_counts": counts,
            "round_tokens": tokens,
            "train_skills": list(self.train_skills),
            "initial_eval_loss": self.initial_eval_loss,
            "probes": self.probes,
            "probe_records": self.probe_records,
            "counted": self.counted,
            "counted_tokens": self.counted_tokens,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any], with_counts: bool = True) -> RoundState:
        """The state `to_dict` wrote (also a checkpoint of earlier versions, which had no `initial_eval_loss`,
        `round_tokens` or probes). `with_counts=False` starts the unfinished round's counts at 0 (every process but the main
        one, so that the counts restored from a checkpoint are summed across processes once)."""
        zeros = [0] * len(state["round_counts"])
        counts = state["round_counts"] if with_counts else zeros
        tokens = state.get("round_tokens", zeros) if with_counts else zeros
        return cls(
            train_skills=tuple(state["train_skills"]),
            p_history=[np.asarray(p, dtype=np.float64) for p in state["p_history"]],
            stream=StreamState.from_dict(state["stream"]),
            round_counts=torch.tensor(counts, dtype=torch.long),
            round_tokens=torch.tensor(tokens, dtype=torch.long),
            rounds_done=int(state["rounds_done"]),
            initial_eval_loss=state.get("initial_eval_loss"),
            probes=list(state.get("probes", [])),
            probe_records=list(state.get("probe_records", [])),
            counted=state.get("counted", []),
            counted_tokens=state.get("counted_tokens", []),
        )

    def load(self, other: RoundState) -> None:
        """Take `other`'s values in place: the mixture stream keeps reading this object's `stream`."""
        self.train_skills, self.p_history, self.rounds_done = other.train_skills, other.p_history, other.rounds_done
        self.round_counts, self.round_tokens = other.round_counts, other.round_tokens
        self.initial_eval_loss = other.initial_eval_loss
        self.probes, self.probe_records = other.probes, other.probe_records
        self.counted, self.counted_tokens = other.counted, other.counted_tokens
        self.stream.positions = other.stream.positions

    def advance_unit(self, counts: Sequence[int], tokens: Sequence[int], sizes: Sequence[int | None]) -> None:
        """A data unit ended: `counts`/`tokens` are the round's samples/tokens so far, summed across processes. The
        stream moves on by the unit's share (what was not counted before), which is then counted."""
        self.stream.advance([int(c) - d for c, d in zip(counts, self.counted, strict=True)], sizes)
        self.counted, self.counted_tokens = [int(c) for c in counts], [int(t) for t in tokens]

    def close_round_counts(self, counts: Sequence[int], tokens: Sequence[int], sizes: Sequence[int | None]) -> None:
        """The round ended (`counts`/`tokens`: its totals over all processes): the stream moves on by its last
        unit's samples, and the next round starts counting from zero."""
        self.advance_unit(counts, tokens, sizes)
        self.round_counts.zero_()
        self.round_tokens.zero_()
        self.counted, self.counted_tokens = [0] * len(self.counted), [0] * len(self.counted_tokens)


def run_layout(args: Any, global_batch_size: int, steps_per_unit: int | None = None) -> dict[str, int]:
    """What a resumed run must share with the checkpoint for its data to continue exactly: rounds, steps and
    samples per round (`global_batch_size` rows per micro-batch over all processes), the steps of a data unit (a
    round, unless the mixer has probe phases: `hf_skillit.probing`), the data seed."""
    return {
        "rounds": args.rounds,
        "steps_per_round": args.steps_per_round,
        "samples_per_round": args.steps_per_round * args.gradient_accumulation_steps * global_batch_size,
        "steps_per_unit": steps_per_unit or args.steps_per_round,
        "data_seed": args.data_seed if args.data_seed is not None else args.seed,
    }


def read_checkpoint_state(
    checkpoint: str, train_skills: Sequence[str], layout: Mapping[str, int], ignore_data_skip: bool
) -> dict[str, Any]:
    """The `skillit_state.json` of `checkpoint`, checked against the run resuming it (its training skills, its
    `layout`, and no round replayed by `ignore_data_skip`)."""
    path = os.path.join(checkpoint, STATE_NAME)
    if not os.path.isfile(path):
        raise ValueError(
            f"checkpoint {checkpoint} has no {STATE_NAME}: it was not written by SkillItTrainer or is incomplete"
        )
    with open(path) as f:
        state = json.load(f)
    if state["train_skills"] != list(train_skills):
        raise ValueError(
            f"checkpoint {checkpoint} was trained on skills {state['train_skills']}, not {list(train_skills)}"
        )
    _check_layout(checkpoint, state["layout"], layout)
    in_round = state["global_step"] % layout["steps_per_round"]
    if in_round and ignore_data_skip:
        raise ValueError(
            f"checkpoint {checkpoint} is {in_round} steps into a round; resuming it with ignore_data_skip=True "
            "would replay that round's data. Resume without ignore_data_skip."
        )
    return state


def _check_layout(checkpoint: str, saved: Mapping[str, int], now: Mapping[str, int]) -> None:
    if (saved["rounds"], saved["steps_per_round"]) != (now["rounds"], now["steps_per_round"]):
        raise ValueError(
            f"checkpoint {checkpoint} was trained with {saved['rounds']} rounds of {saved['steps_per_round']} "
            f"steps (steps_per_round = max_steps / rounds); this run has {now['rounds']} rounds of "
            f"{now['steps_per_round']} steps. Resume with the same max_steps and rounds."
        )
    # A checkpoint written before probe phases existed has no `steps_per_unit`: its units were its rounds.
    if saved.get("steps_per_unit", saved["steps_per_round"]) != now["steps_per_unit"]:
        raise ValueError(
            f"checkpoint {checkpoint} drew its data in units of {saved.get('steps_per_unit')} steps, this run would "
            f"draw units of {now['steps_per_unit']} (gcd of the probe steps and the steps per round): resume with "
            "the same mixer settings"
        )
    if saved["samples_per_round"] != now["samples_per_round"]:
        raise ValueError(
            f"checkpoint {checkpoint} drew {saved['samples_per_round']} samples per round, this run would draw "
            f"{now['samples_per_round']}: resume with the same batch size, gradient accumulation and number of "
            "processes"
        )
    if saved["data_seed"] != now["data_seed"]:
        raise ValueError(
            f"checkpoint {checkpoint} shuffled each skill with seed {saved['data_seed']} (data_seed, else seed); "
            f"this run has {now['data_seed']}, which would reorder every skill mid-epoch"
        )


def start_fresh_run(output_dir: str, overwrite: bool, is_main_process: bool) -> None:
    """Make `output_dir` ready for a new run: refuse one holding another run (trajectory, checkpoints) unless `overwrite`;
    with `overwrite`, the main process removes the old trajectory and every `checkpoint-<step>` folder.

    The old checkpoints go with the old run: left in place, `resume_from_checkpoint=True` after a crash of the new
    run would continue the overwritten one (its layout can be the same), and `save_total_limit` would rotate the
    new run's checkpoints out before the old, higher-numbered ones. Other files in `output_dir` are left alone.
    """
    check_fresh_output_dir(output_dir, overwrite)
    os.makedirs(output_dir, exist_ok=True)
    if not (overwrite and is_main_process):
        return
    trajectory = os.path.join(output_dir, TRAJECTORY_NAME)
    if os.path.exists(trajectory):
        os.remove(trajectory)
    old = checkpoint_folders(output_dir)
    if old:
        logger.warning("overwrite_output_dir: removing the overwritten run's checkpoints in %s: %s", output_dir, old)
        for name in old:
            shutil.rmtree(os.path.join(output_dir, name))


def load_renamed_weights(checkpoint: str, model: Any, is_fsdp: bool) -> None:
    """Load the weights that `save_pretrained` stored under another name.

    transformers' Trainer resumes with a plain `load_state_dict` of `model.safetensors`, skipping the key renames
    `save_pretrained` applied (GPT-NeoX saves `lm_head` as `embed_out`), so such weights would silently stay at
    their initial values and a resumed run would diverge.
    """
    path = os.path.join(checkpoint, SAFE_WEIGHTS_NAME)
    if is_fsdp or not isinstance(model, PreTrainedModel) or not os.path.isfile(path):
        return
    live = model.state_dict()
    name_of = {id(tensor): name for name, tensor in live.items()}
    saved_as = revert_weight_conversion(model, dict(live))
    renamed = {saved: name_of[id(t)] for saved, t in saved_as.items() if name_of.get(id(t), saved) != saved}
    if not renamed:
        return
    with safetensors.safe_open(path, framework="pt", device="cpu") as f:
        stored = set(f.keys())
        weights = {name: f.get_tensor(saved) for saved, name in renamed.items() if saved in stored}
    model.load_state_dict(weights, strict=False)
