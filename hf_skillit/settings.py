"""The Skill-It settings of [`SkillItConfig`] checked together, and the steps and tokens they imply.

The checks run on any object with the settings as attributes: `SkillItConfig.__post_init__` runs them on itself,
after `TrainingArguments`' own, and `hf-skillit train RECIPE --dry-run` runs them on the recipe's `training:`
section read without torch (`hf_skillit.recipes.quick`), so a plan is shown only for settings that train. This
module therefore imports neither torch nor transformers. The registry must hold every built-in mixer when the checks
run: `hf_skillit.config` and `hf_skillit.recipes.quick` import the mixers' modules (the registry's rule).

What `args` needs besides the `SkillItConfig` fields: `world_size` (processes; `TrainingArguments.world_size`) and
`auto_find_batch_size`, `dataloader_persistent_workers`, `max_steps`, `per_device_train_batch_size`,
`gradient_accumulation_steps` of `TrainingArguments`.
"""

from __future__ import annotations

import json
from typing import Any

from .aioli import check_aioli_options
from .mixer_registry import MIXER_NAMES, check_mixer_settings, mixer_names
from .mixing import check_eta, check_reduce, check_skill_it_options, check_window

__all__ = [
    "LONG_DOCUMENTS",
    "WINDOW_UNITS",
    "check_settings",
    "steps_for_token_budget",
    "steps_per_round",
    "tokens_per_step",
]

# `long_documents`: what happens, without packing, to a text longer than `max_length` (`hf_skillit.packing`).
LONG_DOCUMENTS = ("truncate", "chunk")
# `window_unit`: what Skill-It's window counts.
WINDOW_UNITS = ("rounds", "evaluations")


def check_settings(args: Any) -> None:
    """Check the Skill-It settings of `args` together; resolve `token_budget` into `max_steps` and a JSON string
    `fixed_weights` into its value. Raises `ValueError` naming the setting."""
    if args.mixing not in MIXER_NAMES:
        raise ValueError(f"mixing={args.mixing!r} is not one of {', '.join(mixer_names())}")
    if not isinstance(args.rounds, int) or args.rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {args.rounds!r}")
    _check_length_options(args)
    if args.token_budget is not None:
        args.max_steps = steps_for_token_budget(args)
    if args.max_steps is None or args.max_steps <= 0:
        raise ValueError(
            "SkillItConfig needs max_steps > 0 (or token_budget with packing): training is split into rounds of "
            "max_steps / rounds steps"
        )
    if args.rounds > args.max_steps:
        raise ValueError(f"rounds={args.rounds} is more than max_steps={args.max_steps}: a round needs a step")
    if args.max_steps % args.rounds:
        lower = args.max_steps - args.max_steps % args.rounds
        raise ValueError(
            f"max_steps={args.max_steps} is not a multiple of rounds={args.rounds}: every round trains the same "
            f"number of steps; use max_steps={lower} or {lower + args.rounds}"
        )
    check_eta(args.eta)
    check_window(args.window)
    _check_window_options(args)
    if args.single_thread_max_params is not None and args.single_thread_max_params < 0:
        raise ValueError(f"single_thread_max_params must be >= 0 or None, got {args.single_thread_max_params!r}")
    if args.eval_samples_per_skill is not None and args.eval_samples_per_skill < 1:
        raise ValueError(f"eval_samples_per_skill must be >= 1 or None, got {args.eval_samples_per_skill!r}")
    if isinstance(args.fixed_weights, str):
        try:
            args.fixed_weights = json.loads(args.fixed_weights)
        except json.JSONDecodeError as err:
            raise ValueError(f"fixed_weights is not valid JSON: {err}") from None
    mixer = check_mixer_settings(args.mixing, args)  # e.g. mixing='fixed' needs fixed_weights
    check_skill_it_options(mixer, args.loss_normalization, args.mixture_smoothing)
    check_aioli_options(mixer, args)
    if args.auto_find_batch_size:
        raise ValueError(
            "auto_find_batch_size=True is not supported: rounds are sized from the batch size when training starts"
        )
    if args.dataloader_persistent_workers:
        raise ValueError(
            "dataloader_persistent_workers=True is not supported: workers must see each round's new mixture"
        )


def _check_window_options(args: Any) -> None:
    if args.window_unit not in WINDOW_UNITS:
        raise ValueError(f"window_unit must be 'rounds' or 'evaluations', got {args.window_unit!r}")
    check_reduce(args.window_reduce, "window_reduce")
    if (args.window_unit == "evaluations") != (args.skill_eval_steps is not None):
        raise ValueError("window_unit='evaluations' goes with skill_eval_steps (steps between evaluations)")
    every, steps = args.skill_eval_steps, steps_per_round(args)
    if every is not None and (not isinstance(every, int) or every < 1 or steps % every):
        raise ValueError(f"skill_eval_steps={every!r} must be a positive divisor of the {steps} steps of a round")


def _check_length_options(args: Any) -> None:
    if args.max_length is not None and (isinstance(args.max_length, bool) or args.max_length < 1):
        raise ValueError(f"max_length must be a positive number of tokens or None, got {args.max_length!r}")
    if args.packing and args.max_length is None:
        raise ValueError("packing=True needs max_length: the number of tokens of a block")
    if args.long_documents not in LONG_DOCUMENTS:
        raise ValueError(f"long_documents must be one of {', '.join(LONG_DOCUMENTS)}, got {args.long_documents!r}")


def steps_per_round(args: Any) -> int:
    """Optimizer steps per round, `max_steps // rounds`."""
    return args.max_steps // args.rounds


def tokens_per_step(args: Any) -> int | None:
    """Tokens one optimizer step trains with packing (every row a block of `max_length`), over all processes; None
    without packing, where rows differ in length."""
    if not args.packing or args.max_length is None:
        return None
    return args.max_length * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size


def steps_for_token_budget(args: Any) -> int:
    """The `max_steps` that train `token_budget` tokens: rounded up to whole steps, then to a multiple of
    `rounds`."""
    if isinstance(args.token_budget, bool) or not isinstance(args.token_budget, int) or args.token_budget < 1:
        raise ValueError(f"token_budget must be a positive number of tokens, got {args.token_budget!r}")
    per_step = tokens_per_step(args)
    if per_step is None:
        raise ValueError(
            "token_budget needs packing=True: only packed rows all hold max_length tokens, so that a step trains "
            "a known number of tokens; without packing, set max_steps"
        )
    if args.max_steps is not None and args.max_steps > 0:
        raise ValueError(f"set token_budget or max_steps, not both (max_steps={args.max_steps})")
    steps = -(-args.token_budget // per_step)
    return -(-steps // args.rounds) * args.rounds
