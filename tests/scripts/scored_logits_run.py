"""Two CPU processes under torchrun (gloo) training a DDP-wrapped (or FSDP2-sharded) tiny model on completion-only
rows of different lengths through `hf_skillit.scoring.keep_scored_logits`, for tests/test_scoring.py.

    torchrun --nproc_per_node 2 tests/scripts/scored_logits_run.py OUTPUT_DIR [--fsdp]

Rank 0's first batch scores one answer token per row (eligible for the shortcut), rank 1's first batch scores the
long completions that fill most of each row (not eligible); both ranks' second and third batches are eligible. DDP
broadcasts the model's buffers in every forward, so a process that ran the shortcut's two proof forwards on its own
would put the processes' collectives out of step; with `--fsdp` the model is sharded by FSDP2 (`fully_shard`)
instead, whose forwards all-gather the weights. Each rank writes `rank<r>.json`: per call, whether the shortcut
was used and the forwards its model has run so far, and the verdict.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from conftest import tiny_config  # noqa: E402

from hf_skillit import scoring  # noqa: E402
from hf_skillit.collator import IGNORE_INDEX  # noqa: E402
from hf_skillit.synthetic import build_tokenizer, make_tiny_model  # noqa: E402


def batch(tokenizer, lengths: list[int], completion: float, seed: int) -> dict[str, torch.Tensor]:
    """Rows of `lengths` word ids, right-padded; each row's last `completion` share of tokens (at least one) is
    scored, the rest is prompt (-100)."""
    generator = torch.Generator().manual_seed(seed)
    low, high = len(tokenizer.all_special_ids), len(tokenizer)
    width = max(lengths)
    input_ids = torch.full((len(lengths), width), tokenizer.pad_token_id)
    labels = torch.full((len(lengths), width), IGNORE_INDEX)
    attention_mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for i, n in enumerate(lengths):
        ids = torch.randint(low, high, (n,), generator=generator)
        scored = max(1, round(completion * n))
        input_ids[i, :n], attention_mask[i, :n] = ids, 1
        labels[i, n - scored : n] = ids[n - scored :]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def main(output_dir: str, fsdp: bool) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    tokenizer = build_tokenizer()
    model = make_tiny_model(tiny_config(tokenizer), seed=0)
    forwards = []
    model.register_forward_hook(lambda module, args, output: forwards.append(1))
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        ddp = fully_shard(model)
    else:
        ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=1e-3)
    lengths = [[9, 14, 22, 31], [12, 17, 25, 30]][rank]  # rows of different lengths on each rank
    first = batch(tokenizer, lengths, completion=0.0 if rank == 0 else 0.7, seed=rank)
    calls = []
    for inputs in (first, batch(tokenizer, lengths, 0.0, 10 + rank), batch(tokenizer, lengths, 0.0, 20 + rank)):
        ddp.train()
        used = scoring.keep_scored_logits(ddp, inputs)
        loss = ddp(**used).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        calls.append({"shortcut": used is not inputs, "forwards": len(forwards), "loss": float(loss.detach())})
    result = {"calls": calls, "verdict": scoring._VERDICTS.get(model)}
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], "--fsdp" in sys.argv[2:])
