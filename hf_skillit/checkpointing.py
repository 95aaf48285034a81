"""Checkpoints and resume of a Skill-It run: what a checkpoint holds beyond the Trainer's, and how a run continues.

A checkpoint folder gets `skillit_state.json` (`hf_skillit.rundir.STATE_NAME`) before the Trainer's own
`trainer_state.json`, whose presence marks the checkpoint complete: the rounds done, the mixtures so far, the mixer's
state, every skill's stream position, the samples counted in the unfinished round, and the layout (rounds, steps
and samples per round, data seed) a resumed run must share for its data to continue exactly. Resuming restores
all of it, skips half-written checkpoints, cuts the trajectory back to the rounds done, and refuses a layout that
would change the data; a new run refuses an output directory that holds another run.

[`SkillItCheckpointMixin`] holds this for [`SkillItTrainerMixin`] (`hf_skillit.trainer`), which it is a base of:
every trainer that trains on skills resumes the same way.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import safetensors
import torch
from transformers import PreTrainedModel
from transformers.core_model_loading import revert_weight_conversion
from transformers.trainer_utils import TrainOutput
from transformers.utils import SAFE_WEIGHTS_NAME

from .rundir import (
    CHECKPOINT_PREFIX,
    STATE_NAME,
    TRAJECTORY_NAME,
    atomic_write_json,
    check_fresh_output_dir,
    last_complete_checkpoint,
    read_trajectory,
    truncate_trajectory,
)
from .streams import StreamState

__all__ = ["SkillItCheckpointMixin"]


class SkillItCheckpointMixin:
    """Checkpoint state, resume and the run directory's trajectory for a trainer that trains on skills in rounds.

    Uses the round state that `SkillItTrainerMixin` keeps (`_rounds_done`, `_p_history`, `mixer`, `_stream_state`,
    `_round_counts`, `_round_tokens`, `_initial_eval_loss`), and `transformers.Trainer`'s checkpoint hooks, which it extends.
    """

    def skillit_state(self) -> dict[str, Any]:
        """Everything needed to continue the mixture exactly; identical on every process."""
        return {
            "rounds_done": self._rounds_done,
            "global_step": self.state.global_step,
            "p_history": [p.tolist() for p in self._p_history],
            "mixer": self.mixer.state_dict(),
            "stream": self._stream_state.to_dict(),
            "round_counts": self._sum_across_processes(self._round_counts.clone()).tolist(),
            "round_tokens": self._sum_across_processes(self._round_tokens.clone()).tolist(),
            "train_skills": list(self.skills.train_skills),
            "layout": self._layout(),
            "initial_eval_loss": self._initial_eval_loss,
        }

    def _layout(self) -> dict[str, int]:
        """What a resumed run must share with the checkpoint for its data to continue exactly."""
        return {
            "rounds": self.args.rounds,
            "steps_per_round": self.args.steps_per_round,
            "samples_per_round": self.train_dataset.samples_per_round,
            "data_seed": self.train_dataset.seed,
        }

    def _save_checkpoint(self, model, trial) -> None:
        # Collective (counts are summed across processes), so every process computes it; rank 0 writes it
        # before the Trainer's own state, whose presence marks a complete checkpoint.
        state = self.skillit_state()
        folder = os.path.join(self._get_output_dir(trial=trial), f"{CHECKPOINT_PREFIX}-{self.state.global_step}")
        if self.args.should_save:
            atomic_write_json(os.path.join(folder, STATE_NAME), state)
        super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_renamed_weights(resume_from_checkpoint, model if model is not None else self.model)

    def _load_renamed_weights(self, checkpoint: str, model) -> None:
        """Load the weights that `save_pretrained` stored under another name.

        transformers' Trainer resumes with a plain `load_state_dict` of `model.safetensors`, skipping the key
        renames `save_pretrained` applied (GPT-NeoX saves `lm_head` as `embed_out`), so such weights would
        silently stay at their initial values and a resumed run would diverge.
        """
        path = os.path.join(checkpoint, SAFE_WEIGHTS_NAME)
        if self.is_fsdp_enabled or not isinstance(model, PreTrainedModel) or not os.path.isfile(path):
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

    def _load_skillit_state(self, checkpoint: str) -> None:
        path = os.path.join(checkpoint, STATE_NAME)
        if not os.path.isfile(path):
            raise ValueError(
                f"checkpoint {checkpoint} has no {STATE_NAME}: it was not written by SkillItTrainer or is incomplete"
            )
        with open(path) as f:
            state = json.load(f)
        if state["train_skills"] != list(self.skills.train_skills):
            raise ValueError(
                f"checkpoint {checkpoint} was trained on skills {state['train_skills']}, "
                f"not {list(self.skills.train_skills)}"
            )
        self._check_layout(checkpoint, state["layout"])
        in_round = state["global_step"] % self.args.steps_per_round
        if in_round and self.args.ignore_data_skip:
            raise ValueError(
                f"checkpoint {checkpoint} is {in_round} steps into a round; resuming it with ignore_data_skip=True "
                "would replay that round's data. Resume without ignore_data_skip."
            )
        self._rounds_done = state["rounds_done"]
        self._initial_eval_loss = state.get("initial_eval_loss")  # absent from older checkpoints
        self._p_history = [np.asarray(p, dtype=np.float64) for p in state["p_history"]]
        self.mixer.load_state_dict(state["mixer"])
        self._stream_state.positions = StreamState.from_dict(state["stream"]).positions
        # The Trainer skips the resumed round's trained batches without showing them to `training_step`:
        # carry their counts on the main process so the round's sum across processes stays right.
        zeros = [0] * len(self._round_counts)
        counts = state["round_counts"] if self.accelerator.is_main_process else zeros
        tokens = state.get("round_tokens", zeros) if self.accelerator.is_main_process else zeros  # absent: older
        self._round_counts = torch.tensor(counts, dtype=torch.long)
        self._round_tokens = torch.tensor(tokens, dtype=torch.long)
        self._truncate_trajectory(self._rounds_done)

    def _check_layout(self, checkpoint: str, saved: dict[str, int]) -> None:
        now = self._layout()
        if (saved["rounds"], saved["steps_per_round"]) != (now["rounds"], now["steps_per_round"]):
            raise ValueError(
                f"checkpoint {checkpoint} was trained with {saved['rounds']} rounds of {saved['steps_per_round']} "
                f"steps (steps_per_round = max_steps / rounds); this run has {now['rounds']} rounds of "
                f"{now['steps_per_round']} steps. Resume with the same max_steps and rounds."
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

    def _truncate_trajectory(self, rounds_done: int) -> None:
        if self.is_world_process_zero():
            truncate_trajectory(self.args.output_dir, rounds_done)

    def _check_fresh_output_dir(self) -> None:
        check_fresh_output_dir(self.args.output_dir, self.args.overwrite_output_dir)
        path = os.path.join(self.args.output_dir, TRAJECTORY_NAME)
        if self.is_world_process_zero() and os.path.exists(path):
            os.remove(path)

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
        **kwargs: Any,
    ) -> TrainOutput:
        """`Trainer.train`, restoring the mixture, stream positions and round counts when resuming.

        `resume_from_checkpoint=True` picks the newest *complete* checkpoint in `output_dir` (one whose
        state files were all written), so a checkpoint cut short by a crash is skipped.
        """
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"no complete checkpoint to resume from in {self.args.output_dir}")
        if resume_from_checkpoint:
            self._load_skillit_state(resume_from_checkpoint)
        else:
            os.makedirs(self.args.output_dir, exist_ok=True)
            self._check_fresh_output_dir()
            self.accelerator.wait_for_everyone()
            if getattr(self.mixer, "wants_initial_losses", False):
                # Skill-It with loss_normalization="initial" divides by these (lm-eval evaluators included); the
                # mixer's state keeps them, so a resumed run does not measure them again.
                self._initial_eval_loss = self.evaluate_skills()
                self.mixer.set_initial_losses({s: self._initial_eval_loss[s] for s in self.mixer.eval_skills})
            elif self.args.evaluate_skills_before_training and self._eval_names:
                # The loss before the first step, for the plots and the summary; no mixer reads it.
                self._initial_eval_loss = self._validation_losses(self._eval_names)
        return super().train(
            resume_from_checkpoint=resume_from_checkpoint or None,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )

    @property
    def trajectory(self) -> list[dict[str, Any]]:
        """The rounds recorded so far in `output_dir/skillit_trajectory.jsonl`."""
        return read_trajectory(self.args.output_dir)
