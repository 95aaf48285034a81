"""Feasibility search: can a tiny from-scratch model learn the synthetic skills on one CPU thread?

A plain PyTorch loop (no Trainer) over a pool of generated samples, printing per-skill answer loss and greedy
accuracy on 100 validation samples per skill. Example::

    OMP_NUM_THREADS=1 python benchmarks/feasibility.py --task lego --k 3 --train-skills 1,2,3 --steps 3000

The last line is a JSON summary, including for every skill the first evaluation step (and the number of that
skill's training samples seen by then) at which its validation loss fell below ``--loss-threshold``.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from transformers import get_scheduler

from hf_skillit.synthetic import answer_accuracy, build_tokenizer, encode, make_addition, make_lego, make_tiny_model


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["lego", "addition"], default="lego")
    p.add_argument("--k", type=int, default=3, help="LEGO variables / addition digits")
    p.add_argument("--structure", choices=["chain", "tree"], default="chain")
    p.add_argument("--reverse", action="store_true", help="addition: operands written ones digit first")
    p.add_argument("--train-skills", default=None, help="comma-separated skills to train on (default: all)")
    p.add_argument("--proportions", default=None, help="comma-separated weights over --train-skills")
    p.add_argument("--family", choices=["gpt_neox", "llama", "gpt2"], default="gpt_neox")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--rotary", type=float, default=None, help="rotary fraction (default: the family's)")
    p.add_argument("--loss", choices=["answer", "full"], default="answer")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--schedule", choices=["constant_with_warmup", "cosine", "linear"], default="constant_with_warmup")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--beta2", type=float, default=0.999)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--pool", type=int, default=None, help="training pool size (default: steps * batch, capped)")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--loss-threshold", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def make_data(args: argparse.Namespace, n: int, skills: list[int], proportions: list[float], seed: int):
    # Generate over all k skills with zero weight on the untrained ones, so skill ids stay the paper's.
    weights = [proportions[skills.index(s)] if s in skills else 0.0 for s in range(1, args.k + 1)]
    if args.task == "lego":
        return make_lego(n, k=args.k, proportions=weights, structure=args.structure, seed=seed)
    return make_addition(n, digits=args.k, proportions=weights, seed=seed, reverse=args.reverse)


@torch.no_grad()
def skill_losses(model, val) -> dict[str, float]:
    """Token-weighted answer cross-entropy per skill."""
    model.eval()
    logits = model(input_ids=val["input_ids"], attention_mask=val["attention_mask"]).logits[:, :-1]
    labels = val["labels"][:, 1:]
    token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
    scored = (labels != -100).float()
    per_sample = (token_loss * scored).sum(-1), scored.sum(-1)
    model.train()
    out = {}
    for skill in sorted(set(val["skill"])):
        idx = torch.tensor([s == skill for s in val["skill"]])
        out[skill] = (per_sample[0][idx].sum() / per_sample[1][idx].sum()).item()
    return out


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    all_skills = list(range(1, args.k + 1))
    skills = [int(s) for s in args.train_skills.split(",")] if args.train_skills else all_skills
    proportions = [float(p) for p in args.proportions.split(",")] if args.proportions else [1.0] * len(skills)

    tokenizer = build_tokenizer()
    pool_size = args.pool or min(args.steps * args.batch, 200_000)
    t0 = time.time()
    train = encode(make_data(args, pool_size, skills, proportions, args.seed), tokenizer, args.loss == "answer")
    val_text = make_data(args, 100 * args.k, all_skills, [1.0] * args.k, args.seed + 10_000)
    val_ds = encode(val_text, tokenizer, answer_only=True)
    train_ids = torch.tensor(train["input_ids"])
    train_mask = torch.tensor(train["attention_mask"])
    train_labels = torch.tensor(train["labels"])
    train_skill = torch.tensor([int(s) for s in train["skill"]])
    val = {c: torch.tensor(val_ds[c]) for c in ("input_ids", "attention_mask", "labels")} | {"skill": val_ds["skill"]}
    data_s = time.time() - t0

    model = make_tiny_model(
        family=args.family,
        tokenizer=tokenizer,
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        rotary_fraction=args.rotary,
        max_position_embeddings=train_ids.shape[1],
        seed=args.seed,
    )
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, args.beta2),
    )
    scheduler = get_scheduler(args.schedule, optimizer, num_warmup_steps=args.warmup, num_training_steps=args.steps)
    print(
        json.dumps({"args": vars(args), "params": params, "seq_len": train_ids.shape[1], "data_s": round(data_s, 1)})
    )

    seen = torch.zeros(args.k + 1, dtype=torch.long)
    reached: dict[str, dict[str, int]] = {}
    history = []
    order = torch.randperm(len(train_ids))
    cursor, train_s, t_start = 0, 0.0, time.time()
    model.train()
    for step in range(1, args.steps + 1):
        if cursor + args.batch > len(order):
            order, cursor = torch.randperm(len(train_ids)), 0
        idx = order[cursor : cursor + args.batch]
        cursor += args.batch
        t = time.time()
        loss = model(input_ids=train_ids[idx], attention_mask=train_mask[idx], labels=train_labels[idx]).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        train_s += time.time() - t
        seen += torch.bincount(train_skill[idx], minlength=args.k + 1)
        if step % args.eval_every == 0 or step == args.steps:
            losses = skill_losses(model, val)
            acc = answer_accuracy(model, tokenizer, val_ds, batch_size=len(val_ds))
            for skill, value in losses.items():
                if value < args.loss_threshold and skill not in reached:
                    reached[skill] = {"step": step, "samples": int(seen[int(skill)])}
            row = {
                "step": step,
                "wall_s": round(time.time() - t_start, 1),
                "train_steps_per_s": round(step / train_s, 1),
                "train_loss": round(loss.item(), 4),
                "loss": {s: round(v, 4) for s, v in losses.items()},
                "acc": {s: acc[s] for s in sorted(acc)},
            }
            history.append(row)
            print(json.dumps(row), flush=True)
    final = history[-1]
    summary = {
        "summary": True,
        "steps_per_s": final["train_steps_per_s"],
        "wall_s": final["wall_s"],
        "final_loss": final["loss"],
        "final_acc": final["acc"],
        "best_acc": {s: max(h["acc"][s] for h in history) for s in final["acc"]},
        f"reached_loss_{args.loss_threshold}": reached,
        "seen": {str(s): int(seen[s]) for s in all_skills},
        "chance_loss": round(math.log(2 if args.task == "lego" else 10), 4),
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
