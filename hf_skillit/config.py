"""`SkillItConfig`: `TrainingArguments` plus the Skill-It data-selection settings."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import timedelta

from accelerate import PartialState
from transformers import TrainingArguments

from .mixer_registry import MIXER_NAMES, check_mixer_settings, mixer_names

# A live view of the mixer registry: a mixer registered later (`register_mixer`) is a valid choice too.
MIXING_CHOICES = MIXER_NAMES


@dataclass
class SkillItConfig(TrainingArguments):
    """Training arguments for [`SkillItTrainer`].

    Training runs `max_steps` optimizer steps split into `rounds` equal rounds; `max_steps` must be a multiple
    of `rounds`, so every round trains on the same number of samples (the paper's n/T). At the end of each
    round the per-skill validation losses are measured and the mixture for the next round is computed.

    Defaults for `rounds`, `eta` and `window` are the paper's LEGO continual pre-training setting
    (T = 6, eta = 0.5, w = 3; Appendix C.3).
    """

    mixing: str = field(
        default="skill_it",
        metadata={"help": "Data selection: a registered mixer (hf_skillit.mixer_registry)", "choices": MIXING_CHOICES},
    )
    rounds: int = field(default=6, metadata={"help": "Number of rounds T; the mixture changes between rounds."})
    eta: float = field(default=0.5, metadata={"help": "Skill-It learning rate eta (eq. 4)."})
    window: int = field(default=3, metadata={"help": "Rounds of past losses in the Skill-It update (w)."})
    graph_path: str | None = field(
        default=None, metadata={"help": "Skills graph JSON (or .npy with names from the skills), if no graph= given."}
    )
    target_skills: list[str] | None = field(
        default=None, metadata={"help": "Fine-tuning: the evaluation skills to learn (graph columns kept)."}
    )
    fixed_weights: dict | str | None = field(
        default=None,
        metadata={
            "help": "For mixing='fixed': {skill: weight}, or a per-round schedule [{skill: weight}, ...] "
            "(as a list or {'schedule': [...]}); a JSON string of either is accepted."
        },
    )
    eval_samples_per_skill: int | None = field(
        default=None,
        metadata={"help": "Validation rows per skill scored at each round boundary (None: all; paper: 100)."},
    )
    evaluate_skills_every_round: bool = field(
        default=True,
        metadata={"help": "Score every skill at round boundaries even when the mixer does not use the losses."},
    )
    dataset_text_field: str = field(
        default="text", metadata={"help": "Column tokenized when a skill's data has no `input_ids`."}
    )
    max_length: int | None = field(default=None, metadata={"help": "Truncation length when tokenizing text."})
    # transformers 5 dropped this argument; a Skill-It run's output_dir holds its trajectory, which a new run
    # must not silently overwrite.
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start a new run in an output_dir that holds another run's trajectory."}
    )

    def __post_init__(self) -> None:
        if self.use_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 and PartialState._shared_state == {}:
            # transformers 5.23 starts the CPU process group without `ddp_timeout`, so a dead or stuck rank
            # would hang the others for the default 30 minutes; start it here with the timeout instead.
            PartialState(cpu=True, backend=self.ddp_backend, timeout=timedelta(seconds=self.ddp_timeout))
        super().__post_init__()
        if self.mixing not in MIXING_CHOICES:
            raise ValueError(f"mixing={self.mixing!r} is not one of {', '.join(mixer_names())}")
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"rounds must be a positive integer, got {self.rounds!r}")
        if self.max_steps is None or self.max_steps <= 0:
            raise ValueError(
                "SkillItConfig needs max_steps > 0: training is split into rounds of max_steps / rounds steps"
            )
        if self.rounds > self.max_steps:
            raise ValueError(f"rounds={self.rounds} is more than max_steps={self.max_steps}: a round needs a step")
        if self.max_steps % self.rounds:
            lower = self.max_steps - self.max_steps % self.rounds
            raise ValueError(
                f"max_steps={self.max_steps} is not a multiple of rounds={self.rounds}: every round trains the same "
                f"number of steps; use max_steps={lower} or {lower + self.rounds}"
            )
        if not (self.eta > 0 and self.eta < float("inf")):
            raise ValueError(f"eta must be a finite number > 0, got {self.eta!r}")
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be an integer >= 1, got {self.window!r}")
        if self.eval_samples_per_skill is not None and self.eval_samples_per_skill < 1:
            raise ValueError(f"eval_samples_per_skill must be >= 1 or None, got {self.eval_samples_per_skill!r}")
        if isinstance(self.fixed_weights, str):
            try:
                self.fixed_weights = json.loads(self.fixed_weights)
            except json.JSONDecodeError as err:
                raise ValueError(f"fixed_weights is not valid JSON: {err}") from None
        check_mixer_settings(self.mixing, self)  # e.g. mixing='fixed' needs fixed_weights
        if self.auto_find_batch_size:
            raise ValueError(
                "auto_find_batch_size=True is not supported: rounds are sized from the batch size when training starts"
            )
        if self.dataloader_persistent_workers:
            raise ValueError(
                "dataloader_persistent_workers=True is not supported: workers must see each round's new mixture"
            )

    @property
    def steps_per_round(self) -> int:
        return self.max_steps // self.rounds

    def fixed_schedule(self) -> tuple[dict[str, float] | None, list[dict[str, float]] | None]:
        """`fixed_weights` as (weights, schedule), exactly one of them set."""
        from .mixing import split_fixed_weights

        return split_fixed_weights(self.fixed_weights)
