"""`SkillItConfig`: `TrainingArguments` plus the Skill-It data-selection settings."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from accelerate import PartialState
from transformers import TrainingArguments

# The built-in mixers register when their modules are imported (`hf_skillit.mixer_registry`): importing both here
# makes every built-in name a valid `mixing` wherever a SkillItConfig exists.
from . import curriculum  # noqa: F401
from .mixer_registry import MIXER_NAMES
from .mixing import LOSS_NORMALIZATIONS, WINDOW_REDUCTIONS
from .settings import (
    LONG_DOCUMENTS,
    WINDOW_UNITS,
    check_settings,
    steps_for_token_budget,
    steps_per_round,
    tokens_per_step,
)


def _choice(default: str, choices: Sequence[str], help: str) -> Any:
    """A field whose value is one of `choices` (`HfArgumentParser` offers them as the flag's choices; the recipes'
    error names them), the tuple the setting's check reads."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class SkillItConfig(TrainingArguments):
    r"""
    Configuration class for the [`SkillItTrainer`]: `transformers.TrainingArguments` plus the Skill-It data selection.

    Training runs `max_steps` optimizer steps split into `rounds` equal rounds; `max_steps` must be a multiple of
    `rounds`, so every round trains on the same number of samples (the paper's n/T). At the end of each round the
    per-skill validation losses are measured and the mixer computes the mixture of the next round (paper
    Algorithm 1). The defaults of `rounds`, `eta` and `window` are the paper's LEGO continual pre-training setting
    (T = 6, eta = 0.5, w = 3; Appendix C.3). Every other parameter is `TrainingArguments`'; this class refuses
    the two that cannot work with rounds (`auto_find_batch_size`, `dataloader_persistent_workers`).

    Using [`~transformers.HfArgumentParser`] this class becomes command-line arguments (`--mixing`, `--rounds`, ...).

    Parameters:
        > Parameters that choose the mixture

        mixing (`str`, *optional*, defaults to `"skill_it"`):
            The mixer, by its name in the registry (`hf_skillit.mixer_registry`): `"skill_it"` (Algorithm 1),
            `"static"` (Skill-It with T = 1), `"stratified"`, `"random"` (proportional to each skill's rows),
            `"no_graph"` (Skill-It on the identity graph), `"fixed"` (given weights or a per-round schedule),
            `"aioli"` (Aioli, arXiv 2411.05735: the mixing law estimated online from probe phases; no graph), the
            curricula `"curriculum"`, `"anticurriculum"`, `"skill_curriculum"`, `"skill_anticurriculum"`, or a
            name added with [`register_mixer`].
        rounds (`int`, *optional*, defaults to `6`):
            Number of rounds T; the mixture changes between rounds. Must divide `max_steps`.
        eta (`float`, *optional*, defaults to `0.5`):
            Skill-It learning rate eta of the multiplicative update (paper eq. 4); a finite number > 0.
        window (`int`, *optional*, defaults to `3`):
            Rounds w of past validation losses in the Skill-It update (the reference code counts evaluations).
        window_unit (`str`, *optional*, defaults to `"rounds"`):
            What the window counts: `"rounds"` (the paper's text) or `"evaluations"`, the reference code's: the
            skills are also evaluated every `skill_eval_steps` steps inside the rounds and the window holds the w
            most recent evaluations (the mixture still changes only at round ends).
        window_reduce (`str`, *optional*, defaults to `"sum"`):
            How the window's losses combine: `"sum"` (the paper's equation) or `"mean"` (the reference code's
            fine-tuning, which makes eta act w times weaker).
        loss_normalization (`str`, *optional*, defaults to `"none"`):
            `"none"`: the paper's update, on the losses as measured. `"initial"`: each evaluation skill's loss is
            divided by its loss before training (measured then, whatever `evaluate_skills_before_training` says), so
            eta means the same on any loss scale (the reference code's `normalize_loss`; docs/skill_it_options.md).
            Skill-It only (`"skill_it"`, `"no_graph"`).
        mixture_smoothing (`float`, *optional*, defaults to `0.0`):
            c in [0, 1): every Skill-It mixture becomes (1 - c) p + c u, u uniform over the skills that
            skill-stratified sampling draws from, so each keeps at least c / (their number). 0 is the paper's rule.
            Skill-It only (`"skill_it"`, `"no_graph"`).
        skill_eval_steps (`int`, *optional*):
            With `window_unit="evaluations"`: steps between two evaluations (reference code: `max_steps / 120`,
            50 for LEGO); must divide the steps of a round.
        graph_path (`str`, *optional*):
            Skills graph file (`.json` written by `SkillsGraph.save`, or a `.npy` matrix named by the training
            skills), used when the trainer gets no `graph=`. Mixers that need a graph: `"skill_it"`, `"static"`.
        target_skills (`list[str]`, *optional*):
            Fine-tuning: the evaluation skills to learn. The graph keeps only these columns, and each needs a
            training skill with a positive edge into it.
        fixed_weights (`dict`, `list` or `str`, *optional*):
            For `mixing="fixed"`: `{skill: weight}` (skills left out get 0), a list of weights in training-skill
            order, or a per-round schedule `[{skill: weight}, ...]` (also as `{"schedule": [...]}`; the last entry
            holds once the schedule ends); a JSON string of any of these is accepted. Weights are normalised.

        > Parameters of `mixing="aioli"` (docs/aioli.md; the authors' flags of HazyResearch/aioli in brackets)

        Aioli also reads `eta` (its step size [`--eta`]; no default in the authors' code, their runs use 0.1-1, and
        p moves by at most a factor exp(eta) per round because the normalised A sums to 1) and `rounds` (T =
        max_steps / `update_steps`). Its probe steps are training steps of the run, counted in `max_steps`.

        aioli_probe_steps (`int`, *optional*, defaults to `5`):
            Optimizer steps of each probe phase [`--lp_steps`; paper runs 4-10].
        aioli_sweeps (`int`, *optional*, defaults to `1`):
            Passes through the k training skills per round, one probe per skill each, in a random order
            [`--lp_rounds`; paper runs 2-4]. A round spends `aioli_sweeps x k x aioli_probe_steps` steps on probes
            and must keep at least one step for its own mixture.
        aioli_one_hot_factor (`float`, *optional*, defaults to `1.0`):
            ε, the weight of the probed skill in its probe's mixture, the others sharing 1 - ε equally
            [`--one_hot_factor`; paper runs 0.5-0.75]; in (1/k, 1].
        aioli_ema (`float`, *optional*):
            γ in [0, 1), the weight of the past in a moving average of A [`--ema`; paper runs 0.1-0.5]; with it, p is
            recomputed from uniform every round, without it p is updated multiplicatively (exponentiated gradient).
        aioli_normalize (`bool`, *optional*, defaults to `True`):
            Shift A to be non-negative and divide by its sum before the update [`--aioli_normalize_A`: off in the
            code, on in every paper run].
        aioli_diagonal (`bool`, *optional*, defaults to `False`):
            Keep only the diagonal of A [`--aioli_diagonal`]; needs aioli_one_hot_factor < 1 and the validation
            skills to be the training skills.

        > Parameters that control the round-boundary evaluation

        eval_samples_per_skill (`int`, *optional*):
            Validation rows per skill scored at each round boundary; `None` scores all of them (paper: 100).
        evaluate_skills_every_round (`bool`, *optional*, defaults to `True`):
            Score every skill at round boundaries (for the trajectory and the plots) even when the mixer does not
            use the losses; `False` scores only what the mixer needs.
        evaluate_skills_before_training (`bool`, *optional*, defaults to `True`):
            Score the validation skills once before the first step of a new run (not a resumed one), at the start
            of the training loop on the prepared model, as every round is scored: the trajectory's first record
            holds them as `initial_eval_loss`, the loss plot starts from them and the summary measures movement
            from them. The mixers do not use them, so the mixture and the training are the same either way;
            lm-eval evaluators are not run for it.

        > Parameters that control the CPU

        single_thread_max_params (`int`, *optional*, defaults to `50_000_000`):
            Training on CPU, a model with fewer parameters than this runs torch on one thread
            (`torch.set_num_threads(1)`, for the whole process) unless `OMP_NUM_THREADS` is set: its matrices are
            too small for more threads to pay, and contending threads make steps several times slower (measured
            by `benchmarks/overhead/threads.py`; the table is in `benchmarks/RESULTS.md`, issue 17). `None` leaves torch's
            thread count alone.

        > Parameters that control the data preprocessing

        dataset_text_field (`str`, *optional*, defaults to `"text"`):
            Column tokenized with the trainer's `processing_class` when a skill's data has no `input_ids`.
        max_length (`int`, *optional*):
            The longest training row in tokens, and the block size under `packing`; `None` keeps rows as long as
            their documents (checked against the model's context before training).
        packing (`bool`, *optional*, defaults to `False`):
            Continual pre-training on raw text: each skill's documents, EOS after each, are concatenated and cut
            into blocks of `max_length` tokens; a block never mixes skills, and p is then a share of tokens
            (`hf_skillit.packing`, docs/continual_pretraining.md). Off by default, as in TRL's `SFTConfig`: rows stay
            the samples they are (instructions, synthetic tasks), and runs made without it are unchanged.
        long_documents (`str`, *optional*, defaults to `"truncate"`):
            Without packing, what happens to a text longer than `max_length`: `"truncate"` keeps its first
            `max_length` tokens (the dropped tokens are counted in the run summary), `"chunk"` cuts it (EOS at its
            end) into several rows of at most `max_length` tokens.
        token_budget (`int`, *optional*):
            With `packing`: the tokens to train on, instead of `max_steps`. `max_steps` becomes
            `ceil(token_budget / tokens_per_step)` rounded up to a multiple of `rounds`, where a step trains
            `max_length x per_device_train_batch_size x gradient_accumulation_steps x processes` tokens.
        dataset_num_proc (`int`, *optional*):
            Processes of the tokenizing `datasets.map` (map-style skills), as TRL's `SFTConfig.dataset_num_proc`.
            Tokenization runs on the main process first; the other processes then read `datasets`' cache.

        > Parameters that control the run directory

        overwrite_output_dir (`bool`, *optional*, defaults to `False`):
            Start a new run in an `output_dir` that holds another run (its trajectory or checkpoints; otherwise
            refused: resume it with `train(resume_from_checkpoint=True)` or choose another directory). The old
            run's trajectory and `checkpoint-<step>` folders are removed when the new run starts, so a later
            `resume_from_checkpoint=True` cannot continue the overwritten run.

    Example:

    ```python
    >>> from hf_skillit import SkillItConfig
    >>> args = SkillItConfig(output_dir="runs/lego", max_steps=600, rounds=6, eta=0.5, window=3, use_cpu=True)
    >>> args.steps_per_round
    100
    >>> SkillItConfig(output_dir="runs/lego", max_steps=600, rounds=7)
    Traceback (most recent call last):
    ...
    ValueError: max_steps=600 is not a multiple of rounds=7: every round trains the same number of steps; use max_steps=595 or 602
    ```
    """

    mixing: str = _choice("skill_it", MIXER_NAMES, "Data selection: a registered mixer (hf_skillit.mixer_registry)")
    rounds: int = field(default=6, metadata={"help": "Number of rounds T; the mixture changes between rounds."})
    eta: float = field(default=0.5, metadata={"help": "Skill-It learning rate eta (eq. 4)."})
    window: int = field(default=3, metadata={"help": "Rounds of past losses in the Skill-It update (w)."})
    window_unit: str = _choice(
        "rounds", WINDOW_UNITS, "What the window counts: rounds (paper) or evaluations (reference code)."
    )
    window_reduce: str = _choice(
        "sum", WINDOW_REDUCTIONS, "Sum (paper) or mean (reference code, fine-tuning) of the window's losses."
    )
    loss_normalization: str = _choice(
        "none", LOSS_NORMALIZATIONS, "none (paper) or initial: each skill's loss divided by its loss before training."
    )
    mixture_smoothing: float = field(
        default=0.0,
        metadata={"help": "c in [0, 1): Skill-It mixtures become (1 - c) p + c * uniform over the relevant skills."},
    )
    skill_eval_steps: int | None = field(
        default=None, metadata={"help": "window_unit=evaluations: steps between two evaluations inside a round."}
    )
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
    aioli_probe_steps: int = field(default=5, metadata={"help": "mixing=aioli: optimizer steps of each probe phase."})
    aioli_sweeps: int = field(
        default=1, metadata={"help": "mixing=aioli: passes through the training skills (one probe each) per round."}
    )
    aioli_one_hot_factor: float = field(
        default=1.0, metadata={"help": "mixing=aioli: weight of the probed skill in its probe's mixture, in (1/k, 1]."}
    )
    aioli_ema: float | None = field(
        default=None, metadata={"help": "mixing=aioli: weight of the past in a moving average of A, in [0, 1)."}
    )
    aioli_normalize: bool = field(
        default=True, metadata={"help": "mixing=aioli: shift A to >= 0 and divide by its sum (every paper run)."}
    )
    aioli_diagonal: bool = field(default=False, metadata={"help": "mixing=aioli: keep only the diagonal of A."})
    eval_samples_per_skill: int | None = field(
        default=None,
        metadata={"help": "Validation rows per skill scored at each round boundary (None: all; paper: 100)."},
    )
    evaluate_skills_every_round: bool = field(
        default=True,
        metadata={"help": "Score every skill at round boundaries even when the mixer does not use the losses."},
    )
    evaluate_skills_before_training: bool = field(
        default=True,
        metadata={"help": "Score the validation skills before the first step of a new run (initial_eval_loss)."},
    )
    single_thread_max_params: int | None = field(
        default=50_000_000,
        metadata={
            "help": "On CPU, models with fewer parameters train on one torch thread unless OMP_NUM_THREADS is set "
            "(None: leave the thread count alone)."
        },
    )
    dataset_text_field: str = field(
        default="text", metadata={"help": "Column tokenized when a skill's data has no `input_ids`."}
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Longest training row in tokens (block size with packing); None: no limit."}
    )
    packing: bool = field(
        default=False,
        metadata={"help": "Pack each skill's text (EOS between documents) into blocks of max_length tokens."},
    )
    long_documents: str = _choice(
        "truncate",
        LONG_DOCUMENTS,
        "Without packing, texts longer than max_length are truncated or chunked into several rows.",
    )
    token_budget: int | None = field(
        default=None,
        metadata={"help": "With packing: tokens to train on; sets max_steps (rounded up to a multiple of rounds)."},
    )
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Processes of the tokenizing datasets.map (map-style skills)."}
    )
    # transformers 5 dropped this argument; a Skill-It run's output_dir holds its trajectory, which a new run
    # must not silently overwrite.
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start a new run in an output_dir holding another run (its trajectory and checkpoints are removed)."
        },
    )

    def __post_init__(self) -> None:
        if self.use_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 and PartialState._shared_state == {}:
            # transformers 5.23 starts the CPU process group without `ddp_timeout`, so a dead or stuck rank
            # would hang the others for the default 30 minutes; start it here with the timeout instead.
            PartialState(cpu=True, backend=self.ddp_backend, timeout=timedelta(seconds=self.ddp_timeout))
        super().__post_init__()
        check_settings(self)

    @property
    def tokens_per_step(self) -> int | None:
        """Tokens one optimizer step trains with packing (every row a block of `max_length`), over all processes;
        None without packing, where rows differ in length."""
        return tokens_per_step(self)

    def steps_for_token_budget(self) -> int:
        """The `max_steps` that train `token_budget` tokens: rounded up to whole steps, then to a multiple of
        `rounds`."""
        return steps_for_token_budget(self)

    @property
    def steps_per_round(self) -> int:
        """Optimizer steps per round, `max_steps // rounds`."""
        return steps_per_round(self)

    def fixed_schedule(self) -> tuple[dict[str, float] | None, list[dict[str, float]] | None]:
        """`fixed_weights` as (weights, schedule), exactly one of them set."""
        from .mixing import split_fixed_weights

        return split_fixed_weights(self.fixed_weights)
