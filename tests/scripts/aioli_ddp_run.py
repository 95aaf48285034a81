"""A two-process Aioli run for tests/test_probing.py (launched with torchrun on CPU, gloo), on rows of different
lengths (`conftest.varied_length_run`: 2 skills of 4-30 tokens, 13 validation rows each, which two ranks cannot split
evenly).

    torchrun --nproc_per_node 2 tests/scripts/aioli_ddp_run.py OUTPUT_DIR
    python tests/scripts/aioli_ddp_run.py OUTPUT_DIR --single     # one process, both ranks' rows in each batch

Each rank writes `rank<r>.json`: its mixtures (`p_history`), its mixer's state (the losses around the probes, the
estimate A, the log-weights) and, on rank 0, the trajectory. Every rank computes A and p itself from the losses
(summed across processes) and the probe order (seeded by the round): nothing is broadcast.
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from conftest import finish_rank, skillit_config, tiny_config, varied_length_run  # noqa: E402

from hf_skillit import SkillItTrainer  # noqa: E402
from hf_skillit.synthetic import build_tokenizer, make_tiny_model  # noqa: E402


def main(output_dir: str, single: bool) -> None:
    torch.set_num_threads(1)
    tokenizer = build_tokenizer()
    skills, _, settings = varied_length_run(tokenizer, streaming=False, rounds=2, max_steps=24)
    settings.update(mixing="aioli", eta=2.0, aioli_probe_steps=2, aioli_sweeps=2, aioli_one_hot_factor=0.75)
    if single:
        settings["per_device_train_batch_size"] *= 2
        del settings["ddp_backend"]
    args = skillit_config(os.path.join(output_dir, "single" if single else "ddp"), **settings, seed=42)
    trainer = SkillItTrainer(
        model=make_tiny_model(tiny_config(tokenizer)), args=args, skills=skills, processing_class=tokenizer
    )
    trainer.train()
    result = {
        "world_size": trainer.accelerator.num_processes,
        "p_history": [p.tolist() for p in trainer.rounds.p_history],
        "mixer": trainer.mixer.state_dict(),
        "trajectory": trainer.trajectory if trainer.is_world_process_zero() else None,
    }
    if single:
        with open(os.path.join(output_dir, "single.json"), "w") as f:
            json.dump(result, f)
        return
    finish_rank(trainer, output_dir, result)


if __name__ == "__main__":
    main(sys.argv[1], "--single" in sys.argv[2:])
