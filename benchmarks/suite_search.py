"""Search for a CPU-learnable ordered skill suite (issue 11): a plain PyTorch loop, one thread, per-skill curves.

Each run trains a tiny from-scratch model (``hf_skillit.synthetic.make_tiny_model``) on fresh samples of a
candidate suite, answer-only loss, AdamW with 100 warm-up steps then constant lr, and prints one JSON line per
evaluation: per skill ``[answer loss, exact-match accuracy]`` on held-out rows. ``--weights`` sets the training
mixture (``1:0:0`` = skill 1 alone, ``1:1:0`` = the pair (1, 2)), which is how single-skill and pair runs for the
paper's prerequisite rule (arXiv 2307.14430, Appendix C.2: the pair reaches the threshold sooner than the skill
alone) are measured. Started from ``shared/reference/cpu_suite_probe.py``; ``--task`` names a candidate of
``suite_candidates.py`` (``foldk`` is the suite shipped as ``hf_skillit.synthetic.fold``). By default training
rows never repeat a validation row's text, as in the recipes (``--no-holdout`` lifts that). Results: the "Issue 11"
section of ``benchmarks/RESULTS.md``.

    python benchmarks/suite_search.py --task carry --base 2 --digits 3 --steps 1500 > runs/search/x.jsonl
    python benchmarks/suite_search.py --summary runs/search/*.jsonl     # steps to the threshold per skill
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
from transformers import get_scheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite_candidates as suites  # noqa: E402

from hf_skillit.synthetic import build_tokenizer, make_tiny_model  # noqa: E402


def encode(tok, rows):
    ids, labels, sk = [], [], []
    for row in rows:
        pi = tok(row["prompt"], add_special_tokens=False)["input_ids"]
        ai = tok(row["answer"], add_special_tokens=False)["input_ids"]
        if tok.unk_token_id in pi + ai:
            raise ValueError(f"unknown token in {row}")
        x = pi + ai + [tok.eos_token_id]
        ids.append(x)
        labels.append([-100] * len(pi) + ai + [-100])
        sk.append(int(row["skill"]))
    n = max(map(len, ids))
    return (
        torch.tensor([x + [tok.pad_token_id] * (n - len(x)) for x in ids]),
        torch.tensor([y + [-100] * (n - len(y)) for y in labels]),
        torch.tensor(sk),
        torch.tensor([[1] * len(x) + [0] * (n - len(x)) for x in ids]),
    )


def rows(args, n, weights, seed):
    rng = random.Random(seed)
    skills = list(range(1, len(weights) + 1))
    gen = suites.SUITES[args.task]
    kw = {k: getattr(args, k) for k in suites.SUITE_ARGS[args.task]}
    return [gen(rng, rng.choices(skills, weights)[0], **kw) for _ in range(n)]


def run(args):
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    tok = build_tokenizer()
    k = suites.num_skills(args.task, **{a: getattr(args, a) for a in suites.SUITE_ARGS[args.task]})
    weights = [float(w) for w in args.weights.split(":")] if args.weights else [1.0] * k
    validation = rows(args, args.eval_rows * k, [1.0] * k, args.seed + 999)
    train = rows(args, args.steps * args.batch, weights, args.seed)
    if args.holdout:
        # As the recipes do (hf_skillit.recipes): no training row repeats a validation row's text.
        seen = {(r["prompt"], r["answer"]) for r in validation}
        train = [r for r in train if (r["prompt"], r["answer"]) not in seen]
        train = (train * 2)[: args.steps * args.batch]
    va, tr = encode(tok, validation), encode(tok, train)
    seq = max(tr[0].shape[1], va[0].shape[1])
    model = make_tiny_model(
        family=args.family,
        tokenizer=tok,
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        max_position_embeddings=seq,
        seed=args.seed,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sch = get_scheduler("constant_with_warmup", opt, num_warmup_steps=100, num_training_steps=args.steps)
    print(json.dumps({"args": vars(args), "seq": seq, "k": k}), flush=True)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        sl = slice((step - 1) * args.batch, step * args.batch)
        loss = model(input_ids=tr[0][sl], attention_mask=tr[3][sl], labels=tr[1][sl]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as transformers.Trainer does
        opt.step()
        sch.step()
        opt.zero_grad()
        if step % args.eval_every == 0:
            model.eval()
            with torch.no_grad():
                lg = model(input_ids=va[0], attention_mask=va[3]).logits[:, :-1]
            lab = va[1][:, 1:]
            tl = torch.nn.functional.cross_entropy(lg.transpose(1, 2), lab, reduction="none")
            m = (lab != -100).float()
            per = (tl * m).sum(1) / m.sum(1)
            corr = ((lg.argmax(-1) == lab) | (lab == -100)).all(1).float()
            out = {
                str(s): [round(per[va[2] == s].mean().item(), 3), round(corr[va[2] == s].mean().item(), 3)]
                for s in range(1, k + 1)
            }
            print(json.dumps({"step": step, "t": round(time.time() - t0, 1), **out}), flush=True)
            model.train()


def summary(paths, acc):
    """Per run: steps/s and the first evaluated step at which each skill's accuracy reaches ``acc``."""
    for path in paths:
        lines = [json.loads(x) for x in Path(path).read_text().splitlines() if x.startswith("{")]
        if len(lines) < 2:
            continue
        head, evals = lines[0], lines[1:]
        k = head["k"]
        first = {}
        for e in evals:
            for s in range(1, k + 1):
                if str(s) in e and e[str(s)][1] >= acc and s not in first:
                    first[s] = e["step"]
        last = evals[-1]
        sps = last["step"] / max(last["t"], 1e-9)
        reach = " ".join(f"{s}:{first.get(s, '-')}" for s in range(1, k + 1))
        fin = " ".join(f"{last[str(s)][0]:.2f}/{last[str(s)][1]:.2f}" for s in range(1, k + 1))
        print(f"{Path(path).stem:40s} {sps:5.1f} st/s  last {last['step']:5d}  reach{acc}: {reach:30s} final: {fin}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--summary", nargs="*")
    p.add_argument("--acc", type=float, default=0.95)
    p.add_argument("--task", default="carry")
    p.add_argument("--base", type=int, default=2)
    p.add_argument("--digits", type=int, default=3)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--symbols", type=int, default=8)
    p.add_argument("--family", default="gpt2")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-rows", type=int, default=200)
    p.add_argument("--weights", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-holdout", dest="holdout", action="store_false")
    a = p.parse_args()
    if a.summary is not None:
        summary(a.summary, a.acc)
    else:
        run(a)
