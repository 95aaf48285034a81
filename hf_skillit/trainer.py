"""`SkillItTrainer`: a `transformers.Trainer` whose training data is an online Skill-It mixture of skills.

How a run is laid out: `max_steps` optimizer steps split into `rounds` rounds. The training DataLoader's
"epoch" is one round (its length is one round's batches), so the Trainer calls `set_epoch(r)` and re-iterates
the stream at each round start; the stream is built then, with the mixture computed at the previous round's
end. The DataLoader reads one batch ahead, but never across a round boundary: a round's stream has exactly
its own samples, and the next round's stream is only built when the Trainer starts the next epoch, after the
round-end update. So the boundary is exact: every sample of round t is drawn from p_t.

At each round end (the `on_step_end` of its last step), on every process: the samples each process trained
on, counted per skill from the batches themselves, are summed across processes; the skills' positions move
on by those counts; per-skill validation losses are measured (token-weighted, summed across processes so
every rank has the same numbers); the mixer computes the next p. Everything is logged through `Trainer.log`
and appended to `output_dir/skillit_trajectory.jsonl` (`hf_skillit.rundir` owns the run directory's files).

The mixer is chosen by name from the registry (`hf_skillit.mixer_registry`), which also checks that it can run on
the given graph and targets. Probe phases (Aioli) split rounds into shorter epochs (`hf_skillit.probing`).

Round 0 (the losses before the first step, `evaluate_skills_before_training`) is measured at the start of the
training loop, on the model the Trainer prepared, like every later round. The round state (`RoundState`: rounds
done, mixtures, stream positions, the unfinished round's counts) and its checkpoint format are in
`hf_skillit.checkpointing`. All of this is `SkillItTrainerMixin`, which owns the round state and is shared by every
trainer that trains on skills through one setup call: `SkillItTrainer` is the mixin on `transformers.Trainer`,
`hf_skillit.integrations.trl.SkillItSFTTrainer` the same mixin on TRL's `SFTTrainer`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

import datasets
import numpy as np
import torch
from accelerate.utils import DistributedType
from torch.utils.data import DataLoader
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer_utils import TrainOutput

from .checkpointing import RoundState, load_renamed_weights, read_checkpoint_state, run_layout, start_fresh_run
from .collator import TOKENS_KEY, LMCollator, SkillTaggingCollator
from .config import SkillItConfig
from .evaluation import SkillEvaluator, per_skill_loss
from .graph import SkillsGraph
from .mixer_registry import Mixer, build_mixer, is_probing
from .packing import check_context, model_context
from .probing import ProbePhasesMixin, unit_steps
from .rundir import (
    CHECKPOINT_PREFIX,
    STATE_NAME,
    TRAJECTORY_NAME,
    append_trajectory,
    atomic_write_json,
    is_complete_checkpoint,
    last_complete_checkpoint,
    read_trajectory,
    truncate_trajectory,
)
from .scoring import keep_scored_logits
from .skills import SkillSet
from .streams import SKILL_KEY, MixtureStream

logger = logging.getLogger(__name__)

__all__ = [
    "STATE_NAME",
    "TRAJECTORY_NAME",
    "SkillItTrainer",
    "SkillItTrainerMixin",
    "prepare_skills",
    "is_complete_checkpoint",
    "last_complete_checkpoint",
]

_MODEL_COLUMNS = ("input_ids", "attention_mask", "labels")


class _RoundBoundaryCallback(TrainerCallback):
    """Ends a round (or a probe's data unit) after its last optimizer step, before the Trainer logs, saves or
    evaluates; with `window_unit="evaluations"`, also evaluates every `skill_eval_steps` steps inside a round. Measures
    round 0 at the start of a new run's training loop, on the model the Trainer prepared, as every later round."""

    def __init__(self, trainer: SkillItTrainerMixin):
        self.trainer = trainer

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.trainer.measure_round_zero()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.global_step % args.steps_per_round == 0:  # `args` is the trainer's SkillItConfig
            self.trainer.end_round()
        elif state.global_step % self.trainer._unit == 0:  # a probe's unit (a round's unit is its end)
            self.trainer.end_unit()
        elif args.window_unit == "evaluations" and state.global_step % args.skill_eval_steps == 0:
            self.trainer.observe_skills()


def prepare_skills(skills: SkillSet, tokenizer: Any, args: SkillItConfig) -> SkillSet:
    """`skills` tokenized, truncated, chunked or packed as `args` says (`hf_skillit.packing`). The main process
    goes first, so the other processes read the map-style skills from `datasets`' cache instead of tokenizing them
    again."""
    with args.main_process_first(desc="tokenizing the skills"):
        return skills.tokenized(
            tokenizer,
            args.dataset_text_field,
            args.max_length,
            packing=args.packing,
            long_documents=args.long_documents,
            num_proc=args.dataset_num_proc,
        )


def _apply_thread_rule(args: SkillItConfig, model: Any) -> None:
    """`SkillItConfig.single_thread_max_params`: one torch thread for a small model trained on CPU, unless the
    user chose with `OMP_NUM_THREADS`. Process-wide, like any `torch.set_num_threads`."""
    limit = args.single_thread_max_params
    if limit is None or "OMP_NUM_THREADS" in os.environ or model is None or args.device.type != "cpu":
        return
    params = sum(p.numel() for p in model.parameters())
    if params < limit and torch.get_num_threads() != 1:
        logger.info(
            "one torch thread: %d parameters < single_thread_max_params=%d (OMP_NUM_THREADS unset)", params, limit
        )
        torch.set_num_threads(1)


class SkillItTrainerMixin(ProbePhasesMixin):
    """Skill-It's rounds for a `transformers.Trainer` subclass: the mixture stream, the round-end update, the
    trajectory, the round state ([`RoundState`], `self.rounds`) and its checkpoints and resume.

    [`SkillItTrainer`] is this mixin on `Trainer`; `hf_skillit.integrations.trl.SkillItSFTTrainer` is it on TRL's
    `SFTTrainer`. The mixin comes first in the bases, so its overrides (`training_step`, `_save_checkpoint`,
    `train`, ...) run before the trainer's own. Both trainers build the base trainer, then call `_setup_skillit`
    once with their prepared skills: the one setup path.
    """

    def _setup_skillit(
        self,
        skills: SkillSet,
        graph: SkillsGraph | None,
        mixer: Mixer | None,
        evaluators: list[SkillEvaluator] | None,
    ) -> None:
        """Resolve the graph and the mixer for the (tokenized) skills, check that they fit together and that the
        model's context holds every row, and make the mixture stream the training data, ending rounds at their last
        step. Called once, after the base `__init__`."""
        args = self.args
        _apply_thread_rule(args, self.model)
        check_context(skills.splits(), args.max_length, args.packing, model_context(self.model))
        self.skills = skills
        self.evaluators = list(evaluators or [])
        self.graph = self._resolve_graph(graph, args)
        if mixer is None:
            # A mixer may train on other skills than the data's (the sample-level curriculum's difficulty buckets).
            # The curricula score the data now, before accelerate wraps the model's forward in the run's autocast:
            # they get that autocast explicitly (else a bf16 run ranks its rows in fp32, slower than it trains).
            self.skills, mixer = build_mixer(
                args, self.skills, self.graph, self.model, self.data_collator, autocast=self.accelerator.autocast
            )
        self.mixer = mixer
        self._check_mixer(self.mixer)
        if args.window_unit == "evaluations" and not callable(getattr(mixer, "observe", None)):
            raise ValueError(
                f"window_unit='evaluations' needs a mixer whose window holds evaluations (skill_it, no_graph): "
                f"{type(mixer).__name__} has no observe()"
            )
        names = self.skills.train_skills
        self._train_sets = [self.skills.train(name) for name in names]
        self._sizes = list(self.skills.train_sizes().values())
        self._eval_names = self._skills_to_evaluate()
        self._unit = unit_steps(self.mixer, args)
        self.rounds = RoundState.fresh(names, self.mixer.initial())
        self._begin_round_probes()
        self._new_run = True
        self.train_dataset = MixtureStream(  # a "round" of the stream is a data unit (a round, without probes)
            self._model_columns_only(self._train_sets),
            probabilities_for_round=self._probabilities_for_unit,
            state=self.rounds.stream,
            seed=args.data_seed if args.data_seed is not None else args.seed,
            samples_per_round=self._layout()["samples_per_round"] * self._unit // args.steps_per_round,
            batch_size=self._global_batch_size(),
            skill_names=names,
        )
        self.add_callback(_RoundBoundaryCallback(self))

    def _log_round(self, logs: dict[str, float]) -> None:
        """Send a round's `skillit/p/<skill>` and `skillit/loss/<skill>` values to the loggers (`report_to`)."""
        self.log(logs)

    # ----- construction -------------------------------------------------------------------------------

    def _resolve_graph(self, graph: SkillsGraph | None, args: SkillItConfig) -> SkillsGraph | None:
        if graph is None and args.graph_path:
            graph = SkillsGraph.load(args.graph_path, train_skills=list(self.skills.train_skills))
        if graph is None:
            return None
        graph.check_train_skills(self.skills.train_skills)
        return graph.reorder(list(self.skills.train_skills), list(graph.eval_skills))

    def _check_mixer(self, mixer: Mixer) -> None:
        if tuple(mixer.train_skills) != self.skills.train_skills:
            raise ValueError(
                f"the mixer's training skills {list(mixer.train_skills)} are not the data's "
                f"{list(self.skills.train_skills)} (same names, same order)"
            )
        known = set(self.skills.eval_skills) | {s for e in self.evaluators for s in e.skills}
        if not mixer.eval_skills and not known:
            # A mixer that reads losses and has no validation data is refused below; one that reads none (its
            # `eval_skills` are empty: stratified, random, fixed, the curricula) trains, but nothing is measured.
            logger.warning(
                "mixing=%r reads no validation losses and the run has no validation data (no validation skills, "
                "no evaluator): it trains, but records no per-skill loss (eval_loss is empty in the trajectory and "
                "the summary). Give validation data (a recipe's data.validation_files / validation_per_skill, "
                "SkillSet(validation=...)) to follow the skills.",
                getattr(mixer, "name", type(mixer).__name__),
            )
        missing = [s for s in mixer.eval_skills if s not in known]
        if missing:
            raise ValueError(
                f"evaluation skill(s) {', '.join(map(repr, missing))} of the graph have no validation data in the "
                f"SkillSet and no evaluator (validation skills: {', '.join(self.skills.eval_skills)})"
            )

    def _skills_to_evaluate(self) -> list[str]:
        needed = set(self.mixer.eval_skills)
        if self.args.evaluate_skills_every_round:
            needed |= set(self.skills.eval_skills)
        return [s for s in self.skills.eval_skills if s in needed]

    def _evaluators_to_run(self) -> list[SkillEvaluator]:
        if self.args.evaluate_skills_every_round:
            return self.evaluators
        return [e for e in self.evaluators if set(e.skills) & set(self.mixer.eval_skills)]

    def _model_columns_only(self, sets: list) -> list:
        if not self.args.remove_unused_columns:
            return sets
        self._set_signature_columns_if_needed()
        keep = set(self._signature_columns) | set(_MODEL_COLUMNS)
        return [
            ds.select_columns([c for c in ds.column_names if c in keep]) if isinstance(ds, datasets.Dataset) else ds
            for ds in sets
        ]

    # ----- data -------------------------------------------------------------------------------------

    def _global_batch_size(self) -> int:
        """Rows per micro-batch over all processes: `per_device_train_batch_size` x processes, or the batch itself
        with Accelerate's `split_batches=True` (then it is the global batch)."""
        if self.args.accelerator_config.split_batches:
            return self._train_batch_size
        return self._train_batch_size * self.args.world_size

    def get_train_dataloader(self) -> DataLoader:
        """One round of the mixture per epoch; batches carry their rows' skills for exact counting.

        Process r trains on rows `[r b, (r + 1) b)` of every global micro-batch (b rows per process), in both of
        Accelerate's modes. Without dispatching, every process reads the stream and keeps its share
        (`IterableDatasetShard`) and pads its own rows. Dispatching (the default for an `IterableDataset`), process 0
        would collate each process's b rows apart and concatenate the batches (`DataLoaderDispatcher._fetch_batches`),
        which fails as soon as rows differ in length, since each batch is padded to its own longest row. So here
        process 0 collates the global batch at once (one padded length) and Accelerate slices it
        (`split_batches=True` for this loader only), which puts the same rows on the same process.
        """
        collator = SkillTaggingCollator(self._get_collator_with_removed_columns(self.data_collator, "training"))
        accelerator = self.accelerator
        dispatch = accelerator.dispatch_batches
        if dispatch is None:  # `prepare_data_loader`'s default for an IterableDataset
            dispatch = accelerator.device_placement and accelerator.distributed_type != DistributedType.XLA
        # One process has no one to dispatch to; dispatching would also slice every tensor of a batch to the batch
        # size it reads off the first one, which cuts a padding-free batch (one long row, TRL) to its first row.
        dispatch = dispatch and accelerator.num_processes > 1
        whole = dispatch
        if self._global_batch_size() % accelerator.num_processes:
            raise ValueError(
                f"split_batches=True splits each batch of per_device_train_batch_size={self._train_batch_size} rows "
                f"over {accelerator.num_processes} processes: make it a multiple of the number of processes"
            )
        loader = DataLoader(
            self.train_dataset,
            batch_size=self._global_batch_size() if whole else self._global_batch_size() // accelerator.num_processes,
            collate_fn=collator,
            num_workers=self.args.dataloader_num_workers,
            # Workers that live through the run keep their readers, so a streaming skill is read once, forward
            # (MixtureStream publishes each round to them in shared memory).
            persistent_workers=self.args.dataloader_num_workers > 0,
            # Pinning helps only copies to an accelerator; on CPU, torch warns that it is unused.
            pin_memory=self.args.dataloader_pin_memory and self.args.device.type != "cpu",
            prefetch_factor=self.args.dataloader_prefetch_factor,
        )
        config = accelerator.dataloader_config
        accelerator.dataloader_config = dataclasses.replace(config, split_batches=whole, dispatch_batches=dispatch)
        try:
            return accelerator.prepare(loader)
        finally:
            accelerator.dataloader_config = config

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        skills = inputs.pop(SKILL_KEY, None)
        tokens = inputs.pop(TOKENS_KEY, None)
        if skills is not None:
            rounds = self.rounds
            rounds.round_counts += torch.bincount(skills.cpu(), minlength=len(rounds.round_counts))
            if tokens is not None:
                rounds.round_tokens.index_add_(0, skills.cpu(), tokens.cpu().long())
        return super().training_step(model, inputs, num_items_in_batch)

    # ----- rounds -----------------------------------------------------------------------------------

    def _sum_across_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return tensor
        return self.accelerator.reduce(tensor.to(self.args.device), reduction="sum").cpu()

    def _round_totals(self) -> tuple[list[int], list[int]]:
        """The unfinished round's samples and tokens per skill over all processes: one collective for both."""
        rounds = self.rounds
        totals = self._sum_across_processes(torch.stack([rounds.round_counts, rounds.round_tokens]))
        return totals[0].tolist(), totals[1].tolist()

    def evaluate_skills(self, names: list[str] | None = None) -> dict[str, float]:
        """Per-skill validation loss of the current model (token-weighted over the scored positions), plus the
        evaluators' values; the same result on every process."""
        names = self._eval_names if names is None else names
        results = self._validation_losses(names) if names else {}
        for evaluator in self._evaluators_to_run():
            results.update(evaluator(self))
        return results

    def _validation_losses(self, names: list[str]) -> dict[str, float]:
        model = self.model_wrapped if self.is_fsdp_enabled else self.model
        return per_skill_loss(
            model,
            {name: self.skills.validation(name) for name in names},
            collator=self.data_collator,
            batch_size=self.args.per_device_eval_batch_size,
            device=self.args.device,
            process_index=self.accelerator.process_index,
            num_processes=self.accelerator.num_processes,
            reduce_sum=self._sum_across_processes if self.accelerator.num_processes > 1 else None,
            max_samples=self.args.eval_samples_per_skill,
            autocast=self.autocast_smart_context_manager,
        )

    def observe_skills(self) -> None:
        """An evaluation inside a round (`window_unit="evaluations"`, the reference code's): its losses enter the
        mixer's window; the mixture changes at the round's end. Called on every process."""
        losses = self.evaluate_skills()
        self.mixer.observe({s: losses[s] for s in self.mixer.eval_skills})

    def end_round(self) -> dict[str, Any]:
        """Close the current round: count, evaluate, update the mixture, log. Called on every process."""
        names, rounds = self.skills.train_skills, self.rounds
        counts, tokens = self._round_totals()
        rounds.close_round_counts(counts, tokens, self._sizes)
        losses = self.evaluate_skills()
        used = rounds.p
        record: dict[str, Any] = {
            "round": rounds.rounds_done + 1,
            "global_step": self.state.global_step,
            "p": dict(zip(names, used.tolist(), strict=True)),
            "samples": dict(zip(names, counts, strict=True)),
            "tokens": dict(zip(names, tokens, strict=True)),
            "eval_loss": losses,
            **self._probe_part_of_record(),
        }
        if rounds.rounds_done == 0 and rounds.initial_eval_loss:
            record["initial_eval_loss"] = rounds.initial_eval_loss
        if rounds.rounds_done + 1 < self.args.rounds:
            next_p = self.mixer.update({s: losses[s] for s in self.mixer.eval_skills})
            rounds.p_history.append(np.asarray(next_p, dtype=np.float64))
            if not is_probing(self.mixer):  # a probing mixer's next p is decided after the next round's probes
                record["next_p"] = dict(zip(names, rounds.p_history[-1].tolist(), strict=True))
        rounds.rounds_done += 1
        self._begin_round_probes()

        logs = {f"skillit/p/{s}": float(w) for s, w in zip(names, used, strict=True)}
        logs.update({f"skillit/loss/{s}": v for s, v in losses.items()})
        logs.update({f"skillit/tokens/{s}": float(n) for s, n in zip(names, tokens, strict=True)})
        self._log_round(logs)
        if self.is_world_process_zero():
            append_trajectory(self.args.output_dir, record)
            logger.info(
                "round %d/%d at step %d | p: %s | loss: %s",
                record["round"],
                self.args.rounds,
                record["global_step"],
                " ".join(f"{s}={w:.3f}" for s, w in record["p"].items()),
                " ".join(f"{s}={v:.4f}" for s, v in losses.items()),
            )
        return record

    def measure_round_zero(self) -> None:
        """The evaluation before the first step of a new run (`on_train_begin`, on the prepared model). Skill-It
        with `loss_normalization="initial"` divides by these losses (lm-eval evaluators included); the mixer's state
        keeps them, so a resumed run does not measure them again. Otherwise only the validation skills, for the
        plots and the summary: no mixer reads them."""
        if not self._new_run:
            return
        if getattr(self.mixer, "wants_initial_losses", False):
            self.rounds.initial_eval_loss = self.evaluate_skills()
            self.mixer.set_initial_losses({s: self.rounds.initial_eval_loss[s] for s in self.mixer.eval_skills})
        elif self.args.evaluate_skills_before_training and self._eval_names:
            self.rounds.initial_eval_loss = self._validation_losses(self._eval_names)

    # ----- checkpoints and resume ------------------------------------------------------------------------

    def skillit_state(self) -> dict[str, Any]:
        """Everything needed to continue the mixture exactly (`skillit_state.json`); identical on every process."""
        counts, tokens = self._round_totals()
        return {
            **self.rounds.to_dict(round_counts=counts, round_tokens=tokens),
            "global_step": self.state.global_step,
            "mixer": self.mixer.state_dict(),
            "layout": self._layout(),
        }

    def _layout(self) -> dict[str, int]:
        return run_layout(self.args, self._global_batch_size(), self._unit)

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
        model = model if model is not None else self.model
        load_renamed_weights(resume_from_checkpoint, model, self.is_fsdp_enabled)

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
        **kwargs: Any,
    ) -> TrainOutput:
        """`Trainer.train`, restoring the mixture, stream positions and round counts when resuming.

        `resume_from_checkpoint=True` picks the newest *complete* checkpoint in `output_dir` (one whose
        state files were all written), so a checkpoint cut short by a crash is skipped. A new run refuses an
        output directory holding another run, unless `overwrite_output_dir`, which removes that run's trajectory
        and checkpoints.
        """
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"no complete checkpoint to resume from in {self.args.output_dir}")
        self._new_run = not resume_from_checkpoint
        if resume_from_checkpoint:
            state = read_checkpoint_state(
                resume_from_checkpoint, self.skills.train_skills, self._layout(), self.args.ignore_data_skip
            )
            # The Trainer skips the resumed round's trained batches without showing them to `training_step`:
            # their counts are carried on the main process, so the round's sum across processes stays right.
            self.rounds.load(RoundState.from_dict(state, with_counts=self.accelerator.is_main_process))
            self.mixer.load_state_dict(state["mixer"])
            if self.is_world_process_zero():
                truncate_trajectory(self.args.output_dir, self.rounds.rounds_done)
        else:
            start_fresh_run(self.args.output_dir, self.args.overwrite_output_dir, self.is_world_process_zero())
            self.accelerator.wait_for_everyone()
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


class SkillItTrainer(SkillItTrainerMixin, Trainer):
    r"""
    A drop-in [`~transformers.Trainer`] that trains on an online mixture of skills chosen by Skill-It (or a baseline).

    The training data is drawn from `skills` round by round (see `hf_skillit.trainer`): every sample of round t
    comes from the mixture p_t, and at each round's end the per-skill validation losses are measured and the mixer
    computes p_{t+1}. Rounds are logged through `Trainer.log` (`skillit/p/<skill>`, `skillit/loss/<skill>`) and
    recorded in `output_dir/skillit_trajectory.jsonl`; checkpoints carry the mixer's state, so a resumed run
    continues the same mixture on the same data.

    Args:
        model (`PreTrainedModel` or `torch.nn.Module`, *optional*):
            The model to train: a `transformers` causal LM, or a `peft` model. As for `Trainer`, may be left out
            with `model_init=`.
        args ([`SkillItConfig`]):
            The training and Skill-It settings (mixer, rounds, eta, window...).
        skills ([`SkillSet`]):
            Each training skill's data and each evaluation skill's validation data, tokenized (`input_ids`,
            optional `labels` with -100 on unscored positions) or as raw text in `args.dataset_text_field`,
            tokenized here with `processing_class`.
        graph ([`SkillsGraph`], *optional*):
            The skills graph (rows: training skills, columns: evaluation skills); else loaded from
            `args.graph_path`. Needed by the mixers that declare `needs_graph` (`"skill_it"`, `"static"`).
        mixer ([`Mixer`], *optional*):
            A ready-made mixer overriding `args.mixing` (any object with the `Mixer` protocol).
        evaluators (`list[SkillEvaluator]`, *optional*):
            Evaluation skills measured without a validation set, e.g. lm-eval tasks (`hf_skillit.lm_eval_hooks`);
            their skill names can be columns of the graph (out-of-domain).
        data_collator (`Callable`, *optional*):
            Batches rows; defaults to [`LMCollator`] padding with `processing_class.pad_token_id`.
        processing_class (`PreTrainedTokenizerBase`, *optional*):
            The tokenizer: pads batches, and tokenizes skills given as text.
        **kwargs:
            Everything else is passed to `transformers.Trainer` (`callbacks`, `eval_dataset`, `compute_metrics`,
            `optimizers`...), except `train_dataset`: the training data comes from `skills`.

    Example:

    ```python
    >>> from hf_skillit import SkillItConfig, SkillItTrainer, SkillSet, SkillsGraph
    >>> from hf_skillit.synthetic import build_tokenizer, encode, make_lego, make_tiny_model, tiny_model_config
    >>> tokenizer = build_tokenizer()
    >>> rows = encode(make_lego(600, k=3, seed=0), tokenizer)  # LEGO skills "1", "2", "3": reasoning depth
    >>> skills = SkillSet.from_column(rows, column="skill", validation=20, order=["1", "2", "3"])
    >>> graph = SkillsGraph([[1, 0.5, 0], [0, 1, 0.5], [0, 0, 1]], ["1", "2", "3"])  # 1 helps 2, 2 helps 3
    >>> model = make_tiny_model(tiny_model_config(tokenizer=tokenizer, hidden_size=32, num_layers=1, num_heads=2))
    >>> args = SkillItConfig(
    ...     output_dir="runs/doc_example", overwrite_output_dir=True, max_steps=6, rounds=3, eta=0.5,
    ...     per_device_train_batch_size=8, use_cpu=True, report_to="none", disable_tqdm=True, save_strategy="no",
    ... )
    >>> trainer = SkillItTrainer(model=model, args=args, skills=skills, graph=graph, processing_class=tokenizer)
    >>> _ = trainer.train()  # prints each round's mixture p and per-skill validation losses
    {'skillit/p/1': ...}
    ...
    >>> [record["round"] for record in trainer.trajectory]
    [1, 2, 3]
    >>> round(sum(trainer.trajectory[0]["p"].values()), 6)  # p_1 = softmax(eta * row sums of the graph)
    1.0
    ```
    """

    # The LM head at the scored positions only (`keep_scored_logits`); False computes them everywhere, as `Trainer` does.
    scored_logits_only = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Training only: evaluation may return the logits (`return_outputs`) to metrics that expect every position.
        plain_loss = self.compute_loss_func is None and self.label_smoother is None
        if self.scored_logits_only and plain_loss and model.training and not return_outputs:
            inputs = keep_scored_logits(model, inputs)
        return super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )

    def __init__(
        self,
        model: PreTrainedModel | torch.nn.Module | None = None,
        args: SkillItConfig | None = None,
        skills: SkillSet | None = None,
        graph: SkillsGraph | None = None,
        mixer: Mixer | None = None,
        evaluators: list[SkillEvaluator] | None = None,
        data_collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, SkillItConfig):
            raise ValueError(f"args must be a SkillItConfig, got {type(args).__name__}")
        if not isinstance(skills, SkillSet):
            raise ValueError(f"skills must be a SkillSet, got {type(skills).__name__}")
        for unsupported in ("train_dataset",):
            if kwargs.get(unsupported) is not None:
                raise ValueError(f"SkillItTrainer draws its training data from skills=; do not pass {unsupported}=")
        if data_collator is None:
            pad_id = getattr(processing_class, "pad_token_id", None)
            if pad_id is None:
                raise ValueError(
                    "the tokenizer (processing_class) has no pad token, which batching needs: set "
                    "`tokenizer.pad_token = tokenizer.eos_token` (or pass data_collator=)"
                )
            data_collator = LMCollator(pad_token_id=pad_id)
        # Tokenized before the Trainer is built, so that a skill without its text column fails before any model work.
        skills = prepare_skills(skills, processing_class, args)
        super().__init__(
            model=model, args=args, data_collator=data_collator, processing_class=processing_class, **kwargs
        )
        self.args: SkillItConfig
        self._setup_skillit(skills, graph, mixer, evaluators)
