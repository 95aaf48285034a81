"""Two-process SkillItTrainer run for tests/test_ddp.py (launched with torchrun)."""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from conftest import RecordLogs, finish_rank, skillit_config, tiny_config, two_rank_run  # noqa: E402

from hf_skillit import SkillItTrainer  # noqa: E402
from hf_skillit.collator import LMCollator  # noqa: E402
from hf_skillit.evaluation import per_skill_loss  # noqa: E402
from hf_skillit.synthetic import build_tokenizer, make_tiny_model  # noqa: E402


def main(output_dir: str, dispatch: str) -> None:
    torch.set_num_threads(1)
    tokenizer = build_tokenizer()
    skills, graph, settings = two_rank_run(tokenizer, rounds=3, max_steps=12)
    model = make_tiny_model(tiny_config(tokenizer))
    args = skillit_config(
        output_dir,
        **settings,
        accelerator_config={"dispatch_batches": dispatch == "dispatch"},
        logging_steps=500,  # TrainingArguments' defaults, as before the shared config
        seed=42,
    )
    recorder = RecordLogs()
    trainer = SkillItTrainer(
        model=model, args=args, skills=skills, graph=graph, processing_class=tokenizer, callbacks=[recorder]
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    result = {"logs": recorder.logs, "world_size": trainer.accelerator.num_processes}
    if rank == 0:
        # The same final model, scored by one process alone on the same validation rows.
        result["single_process_losses"] = per_skill_loss(
            trainer.model,
            {s: trainer.skills.validation(s) for s in ["1", "2", "3"]},
            LMCollator(tokenizer.pad_token_id),
            batch_size=5,
            device=torch.device("cpu"),
        )
        result["trajectory"] = trainer.trajectory
    finish_rank(trainer, output_dir, result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
