"""Two-process SkillItTrainer runs for tests/test_ddp.py (launched with torchrun), on rows of different lengths.

    torchrun --nproc_per_node 2 tests/scripts/ddp_run.py OUTPUT_DIR

One launch trains six runs one after the other (starting the processes costs more than training): map-style and
streaming skills (`conftest.varied_length_run`), each with Accelerate's two dispatch settings
(`accelerator_config={"dispatch_batches": True}`, process 0 reads and sends every batch; `False`, every process reads
the stream and keeps its share), and map-style skills with `split_batches=True` in both settings. Each rank writes, per run: what it logged (p and losses each round) and the (skill, tokens)
of every row of every micro-batch it trained on; rank 0 also the trajectory and the per-skill losses of the final
model scored by one process alone. `python ddp_run.py OUTPUT_DIR --single` trains the same runs in one process with
the two ranks' batches in one (batches of 8), the recomputation the test compares against.
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from conftest import RecordLogs, finish_rank, skillit_config, tiny_config, varied_length_run  # noqa: E402

from hf_skillit import SkillItTrainer  # noqa: E402
from hf_skillit.collator import LMCollator  # noqa: E402
from hf_skillit.evaluation import per_skill_loss  # noqa: E402
from hf_skillit.streams import SKILL_KEY  # noqa: E402
from hf_skillit.synthetic import build_tokenizer, make_tiny_model  # noqa: E402

RUNS = [(kind, mode) for kind in ("map", "streaming") for mode in ("dispatch", "no_dispatch")]
RUNS += [("map", "split_dispatch"), ("map", "split_no_dispatch")]
"""(skills, mode): "split_*" sets `split_batches=True`, with which `per_device_train_batch_size` is the global batch."""
ZERO2 = {
    "zero_optimization": {"stage": 2},
    **dict.fromkeys(["train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"], "auto"),
}
"""DeepSpeed ZeRO-2 (`--zero2`): optimizer states and gradients partitioned over the processes; "auto" takes the
batch size, accumulation and clipping from the `SkillItConfig`, as users write it."""


class RecordingTrainer(SkillItTrainer):
    """Records the (skill, tokens) of every row of every training micro-batch this process trains on."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        rows = zip(inputs[SKILL_KEY].tolist(), inputs["attention_mask"].sum(dim=1).tolist(), strict=True)
        self.micro_batches.append([list(row) for row in rows])
        return super().training_step(model, inputs, num_items_in_batch)


def train(output_dir: str, kind: str, mode: str, single: bool = False) -> tuple[RecordingTrainer, dict]:
    tokenizer = build_tokenizer()
    skills, graph, settings = varied_length_run(tokenizer, streaming=kind == "streaming", rounds=3, max_steps=12)
    split = mode.startswith("split_")
    if single or split:  # one process trains on both ranks' rows at once; or the batch is split over the two
        settings["per_device_train_batch_size"] *= 2
    if single:
        del settings["ddp_backend"]
    if mode == "zero2":
        settings["deepspeed"] = ZERO2
    else:
        settings["accelerator_config"] = {"dispatch_batches": not mode.endswith("no_dispatch"), "split_batches": split}
    model = make_tiny_model(tiny_config(tokenizer))
    args = skillit_config(os.path.join(output_dir, f"{kind}-{mode}"), **settings, seed=42)
    recorder = RecordLogs()
    trainer = RecordingTrainer(
        model=model, args=args, skills=skills, graph=graph, processing_class=tokenizer, callbacks=[recorder]
    )
    trainer.micro_batches = []
    trainer.train()
    result = {
        "logs": recorder.logs,
        "world_size": trainer.accelerator.num_processes,
        "micro_batches": trainer.micro_batches,
    }
    if mode == "zero2":  # what DeepSpeed built: its engine, the ZeRO stage, this process's share of the weights
        engine = trainer.model_wrapped
        result["engine"] = type(engine).__name__
        result["zero_stage"] = engine.zero_optimization_stage()
        result["partition"] = sum(p.numel() for p in engine.optimizer.single_partition_of_fp32_groups)
        result["parameters"] = sum(p.numel() for p in trainer.model.parameters())
    if trainer.accelerator.process_index == 0:
        # The same final model, scored by one process alone on the same validation rows.
        result["single_process_losses"] = per_skill_loss(
            trainer.model,
            {s: trainer.skills.validation(s) for s in trainer.skills.eval_skills},
            LMCollator(tokenizer.pad_token_id),
            batch_size=5,
            device=torch.device("cpu"),
        )
        result["trajectory"] = trainer.trajectory
    return trainer, result


def main(output_dir: str, single: bool, zero2: bool) -> None:
    torch.set_num_threads(1)
    if zero2:  # a launch of its own: DeepSpeed's accelerator state cannot follow DDP's in one process
        import deepspeed.ops

        # No shared-memory allreduce kernel: DeepSpeed compiles it with the C++ compiler on first use on CPU
        # (`comm.torch.build_shm_op`, minutes on CI's two cores); without it, DeepSpeed talks through gloo.
        deepspeed.ops.__compatible_ops__ = {}
        trainer, result = train(output_dir, "map", "zero2")
        finish_rank(trainer, output_dir, {"map-zero2": result})
        return
    if single:
        results = {kind: train(output_dir, kind, "no_dispatch", single=True)[1] for kind in ("map", "streaming")}
        with open(os.path.join(output_dir, "single.json"), "w") as f:
            json.dump(results, f)
        return
    results = {}
    for kind, mode in RUNS:
        trainer, results[f"{kind}-{mode}"] = train(output_dir, kind, mode)
    finish_rank(trainer, output_dir, results)


if __name__ == "__main__":
    main(sys.argv[1], "--single" in sys.argv[2:], "--zero2" in sys.argv[2:])
