"""Skill-It data selection in TRL's `SFTTrainer` (`pip install 'hf-skillit[trl]'`).

[`SkillItSFTTrainer`] is TRL's `SFTTrainer` whose training data is an online Skill-It mixture of skills
(Algorithm 1 of the paper, arXiv 2307.14430), and [`SkillItSFTConfig`] is TRL's `SFTConfig` with the Skill-It
settings of [`~hf_skillit.SkillItConfig`]. Rounds, the mixture stream, the round-end update, the trajectory,
checkpoints and resume are `hf_skillit.trainer.SkillItTrainerMixin`, the same code as [`~hf_skillit.SkillItTrainer`];
this module only connects it to TRL:

- each skill's training and validation data is prepared by `SFTTrainer` itself, so raw text (`dataset_text_field`),
  prompt/completion and chat (`messages`) rows are tokenized TRL's way: EOS added, chat template applied,
  completion-only or assistant-only labels as `SFTConfig` says. Per-skill validation losses are scored on the
  positions TRL trains on (e.g. the completion tokens only);
- batches are TRL's collator's, the loss is TRL's (`loss_type`), `peft_config` wraps the model as in TRL;
- the round-end values go to `Trainer.log` unchanged, so TRL's running token metrics are left to its own logs.

`packing=True` is TRL's own packing (`packing_strategy`) applied to each skill's split alone, so a packed row never
mixes skills, and the labels TRL builds before packing (completion-only, assistant-only) are packed with the tokens.
A padding-free batch (`padding_free`, or the `bfd` strategies, which imply it) is one long row and cannot be split
over processes: with several processes, use `packing_strategy="wrapped"`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

from ..config import SkillItConfig
from ..evaluation import SkillEvaluator
from ..graph import SkillsGraph
from ..mixer_registry import Mixer
from ..skills import SkillSet
from ..trainer import SkillItTrainerMixin

try:
    from trl import SFTConfig, SFTTrainer
except ImportError as err:  # pragma: no cover - the message is what a user without the extra sees
    raise ImportError("hf_skillit.integrations.trl needs TRL: pip install 'hf-skillit[trl]'") from err

__all__ = ["SkillItSFTConfig", "SkillItSFTTrainer"]


@dataclass
class SkillItSFTConfig(SFTConfig, SkillItConfig):
    """Configuration of [`SkillItSFTTrainer`]: TRL's `SFTConfig` plus the Skill-It fields of
    [`~hf_skillit.SkillItConfig`] (`mixing`, `rounds`, `eta`, `window`, `graph_path`, `target_skills`,
    `fixed_weights`, `eval_samples_per_skill`, `evaluate_skills_every_round`).

    Both parse from the command line with `HfArgumentParser` or TRL's `TrlParser`. Where the two define the same
    field, TRL's default wins: `max_length` 1024, and TRL's `logging_steps` 10, `gradient_checkpointing` True and
    `bf16` True (set `bf16=False` on a CPU without bfloat16 support). As in `SkillItConfig`, `max_steps` must be a
    positive multiple of `rounds`.
    """


class SkillItSFTTrainer(SkillItTrainerMixin, SFTTrainer):
    """TRL's `SFTTrainer` training on an online Skill-It mixture of skills.

    Args:
        model (`str`, `PreTrainedModel` or `PeftModel`):
            The model, as for `SFTTrainer`.
        args ([`SkillItSFTConfig`]):
            TRL's SFT settings and Skill-It's.
        skills ([`~hf_skillit.SkillSet`]):
            Each training skill's data and each evaluation skill's validation data: raw text (`dataset_text_field`),
            prompt/completion or conversational rows, or already tokenized rows, each skill prepared by
            `SFTTrainer` (map-style or streaming `IterableDataset`s).
        graph ([`~hf_skillit.SkillsGraph`], *optional*):
            Rows = training skills, columns = evaluation skills; else `args.graph_path`. Not needed by the mixtures
            that use no graph.
        processing_class (`PreTrainedTokenizerBase`, *optional*):
            The tokenizer, as for `SFTTrainer` (loaded from the model's name if None).
        peft_config (`peft.PeftConfig`, *optional*):
            Wrap the model with this adapter, as `SFTTrainer` does.
        mixer (*optional*):
            A ready-made mixer overriding `args.mixing`.
        evaluators (`list[SkillEvaluator]`, *optional*):
            Evaluation skills without validation data, e.g. lm-eval tasks (`hf_skillit.lm_eval_hooks`).
        formatting_func (`Callable`, *optional*):
            Applied to every skill's rows before tokenization, as in `SFTTrainer`.
        Everything else (`data_collator`, `callbacks`, `optimizers`, `eval_dataset`, ...) goes to `SFTTrainer`.
    """

    def __init__(
        self,
        model: PreTrainedModel | torch.nn.Module | str,
        args: SkillItSFTConfig | None = None,
        skills: SkillSet | None = None,
        graph: SkillsGraph | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        peft_config: Any = None,
        mixer: Mixer | None = None,
        evaluators: list[SkillEvaluator] | None = None,
        formatting_func: Callable[[dict[str, Any]], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, SkillItSFTConfig):
            raise ValueError(f"args must be a SkillItSFTConfig, got {type(args).__name__}")
        if not isinstance(skills, SkillSet):
            raise ValueError(f"skills must be a SkillSet, got {type(skills).__name__}")
        if kwargs.get("train_dataset") is not None:
            raise ValueError("SkillItSFTTrainer draws its training data from skills=; do not pass train_dataset=")
        if (args.padding_free or (args.packing and args.packing_strategy != "wrapped")) and args.world_size > 1:
            raise ValueError(
                "padding-free batches (padding_free=True, or packing with packing_strategy 'bfd'/'bfd_split') are one "
                "long row, which cannot be split over processes: with more than one process use "
                "packing_strategy='wrapped', or no packing"
            )
        # SFTTrainer detects the data format (text, prompt/completion, chat) from a training row, and prepares the
        # dataset it is given: hand it one row of the first skill; every skill is prepared below.
        super().__init__(
            model=model,
            args=args,
            train_dataset=skills.train(skills.train_skills[0]).take(1),
            processing_class=processing_class,
            peft_config=peft_config,
            formatting_func=formatting_func,
            **kwargs,
        )
        self.args: SkillItSFTConfig
        self._setup_skillit(self._prepared(skills), graph, mixer, evaluators)

    def _prepared(self, skills: SkillSet) -> SkillSet:
        """Every skill's data prepared by `SFTTrainer._prepare_dataset` (the tokenization of TRL's own datasets)."""

        def prepare(dataset, name: str, split: str):
            if self.args.completion_only_loss is None:
                # As if each skill were its own SFTTrainer's dataset: completion-only loss for prompt/completion rows.
                row = next(iter(dataset))
                self.completion_only_loss = "prompt" in row and "completion" in row
            # TRL's packing, applied to one skill's split at a time: a packed row never mixes skills.
            packing = self.args.packing
            if split == "validation" and self.args.eval_packing is not None:
                packing = self.args.eval_packing
            return self._prepare_dataset(
                dataset, self.processing_class, self.args, packing, self._formatting_func, f"{name} {split}"
            )

        decided = self.completion_only_loss
        try:
            return skills.map(prepare)
        finally:
            self.completion_only_loss = decided

    def _log_round(self, logs: dict[str, float]) -> None:
        # `SFTTrainer.log` would fold its running token metrics into the round's record and reset them.
        Trainer.log(self, logs)
