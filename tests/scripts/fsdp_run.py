"""Two-process SkillItTrainer run under PyTorch FSDP2 (`fully_shard`) on CPU with gloo, for tests/test_fsdp.py.

    torchrun --nproc_per_node 2 tests/scripts/fsdp_run.py OUTPUT_DIR TASK_DIR [--resume-from-step N]

Accelerate never enables FSDP on CPU: `AcceleratorState.__init__` (accelerate 1.15, state.py) sets
`DistributedType.FSDP` and keeps the `fsdp_plugin` only inside the branch for accelerator devices
(`MULTI_GPU`, `MULTI_NPU`, ...); with `use_cpu=True` the state stays `MULTI_CPU`, the plugin is dropped, the
Trainer's `is_fsdp_enabled` is False and `prepare` wraps the model in DDP. So [`CPUFSDP2Trainer`] turns the
state into what accelerate builds on GPUs, right after the Trainer created its Accelerator: distributed type
FSDP, the plugin built from `SkillItConfig(fsdp=..., fsdp_config={"version": 2, ...})` exactly as the Trainer
builds it, and `is_fsdp_enabled`. From there on every code path is the GPU one: `Accelerator.prepare` calls
`fsdp2_prepare_model` (accelerate's `fully_shard` of each `GPTNeoXLayer`, the embeddings and the root), the
optimizer is created on the sharded parameters, and forwards all-gather over gloo. The test checks the model
really is sharded (DTensor parameters holding half of each weight).

At every round boundary, after the trainer's own (sharded) evaluation, a reference evaluator gathers the full
weights on every rank and, on rank 0 alone, scores them unsharded: the validation losses with `per_skill_loss`
on one process, and the lm-eval tasks with `LMEvalSkills.evaluate` on a plain model. Each rank writes what it
logged, and rank 0 the references and the trajectory, to `OUTPUT_DIR/rank<r>.json`.

Checkpoints are FSDP's sharded ones (`SHARDED_STATE_DICT`: each rank writes its shard with
`torch.distributed.checkpoint`). With `FULL_STATE_DICT`, transformers' `save_model` fails here on CPU inside
safetensors ("Attempted to access the data pointer on an invalid python storage"), presumably because the gathered
tensors still point into FSDP2's freed unsharded buffers when the `cpu_offload` copy, which makes them fresh on
GPUs, is a no-op on CPU (not investigated further).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import torch
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor
from transformers import TrainerCallback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from conftest import RecordLogs, finish_rank, skillit_config, tiny_config, two_rank_run  # noqa: E402

from hf_skillit import SkillItTrainer  # noqa: E402
from hf_skillit.collator import LMCollator  # noqa: E402
from hf_skillit.evaluation import per_skill_loss  # noqa: E402
from hf_skillit.lm_eval_hooks import LMEvalSkills  # noqa: E402
from hf_skillit.rundir import TRAJECTORY_NAME  # noqa: E402
from hf_skillit.synthetic import build_tokenizer, make_tiny_model  # noqa: E402

SKILLS = ["1", "2", "3"]
TASKS = ["cycle_next", "noise_choice"]


class CPUFSDP2Trainer(SkillItTrainer):
    """`SkillItTrainer` with the FSDP state accelerate would build on GPUs, on CPU processes (see module doc)."""

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        if self.args.fsdp_plugin_args is None:
            raise ValueError("CPUFSDP2Trainer needs SkillItConfig(fsdp=..., fsdp_config={'version': 2, ...})")
        state = self.accelerator.state
        state.distributed_type = DistributedType.FSDP
        state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
        self.is_fsdp_enabled = True


LAYER_WEIGHT = "gpt_neox.layers.0.mlp.dense_h_to_4h.weight"


class EvaluationsSeen:
    """At the start of each evaluation's first forward (model in eval mode): the step, the model's class and whether
    a layer's weight is a DTensor shard. Round 0 must see the module FSDP sharded, as every later round does."""

    def __init__(self):
        self.trainer, self.seen = None, []

    def watch(self, trainer) -> None:
        self.trainer = trainer
        trainer.model.register_forward_pre_hook(self.hook)

    def hook(self, module, args) -> None:
        step = self.trainer.state.global_step
        if module.training or (self.seen and self.seen[-1]["step"] == step):
            return
        dtensor = isinstance(module.get_parameter(LAYER_WEIGHT), DTensor)
        self.seen.append({"step": step, "class": type(module).__name__, "dtensor": dtensor})


class RecordSteps(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


class UnshardedReference:
    """A `SkillEvaluator` adding nothing to the mixture: it gathers the full weights (a collective, so every
    rank calls it) and rank 0 scores them unsharded, on one process."""

    skills: tuple[str, ...] = ()

    def __init__(self, config, tokenizer, lm_eval: LMEvalSkills):
        self.config = config
        self.tokenizer = tokenizer
        self.lm_eval = lm_eval
        self.rounds: list[dict] = []
        self.sharding: dict | None = None

    def __call__(self, trainer) -> dict[str, float]:
        model = trainer.model_wrapped
        if self.sharding is None:
            weight = model.get_parameter(LAYER_WEIGHT)
            self.sharding = {
                "class": type(model).__name__,
                "dtensor": isinstance(weight, DTensor),
                "local_rows": weight.to_local().shape[0] if isinstance(weight, DTensor) else weight.shape[0],
                "full_rows": weight.shape[0],
            }
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        if trainer.accelerator.is_main_process:
            plain = make_tiny_model(self.config)
            plain.load_state_dict(full)
            losses = per_skill_loss(
                plain,
                {s: trainer.skills.validation(s) for s in SKILLS},
                LMCollator(self.tokenizer.pad_token_id),
                batch_size=5,
                device=torch.device("cpu"),
            )
            lm_eval = {
                task: self.lm_eval.scalar(m) for task, m in self.lm_eval.evaluate(plain, self.tokenizer).items()
            }
            self.rounds.append({"step": trainer.state.global_step, "losses": losses, "lm_eval": lm_eval})
        return {}


def build_trainer(
    output_dir: str, lm_eval: LMEvalSkills, save_steps: int | None, evaluators=(), callbacks=()
) -> CPUFSDP2Trainer:
    """Skill-It over 3 LEGO skills, 2 rounds of 4 steps, tiny GPT-NeoX sharded with FSDP2 (sharded checkpoints)."""
    tokenizer = build_tokenizer()
    skills, graph, settings = two_rank_run(tokenizer, rounds=2, max_steps=8)
    config = tiny_config(tokenizer)
    args = skillit_config(
        output_dir,
        **settings,
        fsdp=True,
        fsdp_config={
            "version": 2,
            "transformer_layer_cls_to_wrap": ["GPTNeoXLayer"],
            "reshard_after_forward": True,
            "state_dict_type": "SHARDED_STATE_DICT",
        },
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 1,
    )
    return CPUFSDP2Trainer(
        model=make_tiny_model(config),
        args=args,
        skills=skills,
        graph=graph,
        evaluators=[lm_eval, *evaluators],
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )


def main(output_dir: str, task_dir: str, resume_from_step: int | None = None) -> None:
    """Train; with `resume_from_step`, also resume a copy of that checkpoint in `output_dir/resumed`, in the same
    processes (a second launch would double the test's time), and record its trajectory."""
    torch.set_num_threads(1)
    lm_eval = LMEvalSkills(TASKS, include_path=task_dir, include_defaults=False, batch_size=4)
    recorder = RecordLogs()
    tokenizer = build_tokenizer()
    config = tiny_config(tokenizer)
    reference = UnshardedReference(config, tokenizer, lm_eval)
    trainer = build_trainer(output_dir, lm_eval, resume_from_step, [reference], [recorder])
    evaluations = EvaluationsSeen()
    evaluations.watch(trainer)
    trainer.train()
    rank = trainer.accelerator.process_index
    result = {
        "logs": recorder.logs,
        "world_size": trainer.accelerator.num_processes,
        "fsdp_enabled": trainer.is_fsdp_enabled,
        "sharding": reference.sharding,
        "evaluations": evaluations.seen,
    }
    if rank == 0:
        result["reference"] = reference.rounds
        result["trajectory"] = trainer.trajectory
    if resume_from_step:
        resumed = os.path.join(output_dir, "resumed")
        if rank == 0:
            checkpoint = f"checkpoint-{resume_from_step}"
            shutil.copytree(os.path.join(output_dir, checkpoint), os.path.join(resumed, checkpoint))
            shutil.copy(os.path.join(output_dir, TRAJECTORY_NAME), os.path.join(resumed, TRAJECTORY_NAME))
        trainer.accelerator.wait_for_everyone()
        steps = RecordSteps()
        again = build_trainer(resumed, lm_eval, resume_from_step, callbacks=[steps])
        again.train(resume_from_checkpoint=True)
        result["resumed_steps"] = steps.steps
        if rank == 0:
            result["resumed_trajectory"] = again.trajectory
    finish_rank(trainer, output_dir, result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir")
    parser.add_argument("task_dir")
    parser.add_argument(
        "--resume-from-step", type=int, help="save a sharded checkpoint at this step, then resume a copy of it"
    )
    opts = parser.parse_args()
    main(opts.output_dir, opts.task_dir, opts.resume_from_step)
