"""Word-level tokenizer for the synthetic tasks, built locally (no hub access), and answer-masked encoding."""

from __future__ import annotations

import string
from collections.abc import Iterable

from datasets import Dataset
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "bos_token": "[BOS]", "eos_token": "[EOS]"}
# LEGO uses lowercase variable names, addition the uppercase A, both the digits.
SYNTHETIC_VOCAB = (
    list(string.ascii_lowercase)
    + list(string.digits)
    + ["val", "not", "Input", "Output", "A", ":", "=", ",", ".", "+", "?"]
)
TEXT_COLUMNS = ("text", "prompt", "answer")


def build_tokenizer(vocab: Iterable[str] | None = None) -> PreTrainedTokenizerFast:
    """A whitespace-split, word-level tokenizer over ``vocab`` (default: LEGO and addition words) plus
    ``[PAD]`` (id 0), ``[UNK]``, ``[BOS]`` and ``[EOS]``. It adds no special tokens on its own."""
    words = list(dict.fromkeys([*SPECIAL_TOKENS.values(), *(vocab or SYNTHETIC_VOCAB)]))
    model = WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token=SPECIAL_TOKENS["unk_token"])
    backend = Tokenizer(model)
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)


def encode(
    ds: Dataset,
    tokenizer: PreTrainedTokenizerFast,
    answer_only: bool = True,
    max_length: int | None = None,
) -> Dataset:
    """Tokenize ``prompt`` + ``answer`` + rest of ``text`` + eos into ``input_ids``, ``attention_mask``, ``labels``.

    ``labels`` is -100 (not scored) on padding and, with ``answer_only``, everywhere except the answer tokens;
    otherwise it equals ``input_ids`` on every real token. All rows are right-padded to ``max_length`` (default:
    the longest row), so the default data collator can stack them. Text columns are removed, the rest (``skill``,
    ids) kept.
    """

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        prompts = tokenizer(batch["prompt"], add_special_tokens=False)["input_ids"]
        answers = tokenizer(batch["answer"], add_special_tokens=False)["input_ids"]
        texts = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        input_ids, labels = [], []
        for prompt, answer, text in zip(prompts, answers, texts, strict=True):
            if text[: len(prompt) + len(answer)] != prompt + answer:
                raise ValueError("`text` must start with `prompt` followed by `answer`")
            ids = text + [tokenizer.eos_token_id]
            scored = range(len(prompt), len(prompt) + len(answer)) if answer_only else range(len(ids))
            input_ids.append(ids)
            labels.append([t if i in scored else -100 for i, t in enumerate(ids)])
        return {"input_ids": input_ids, "labels": labels}

    columns = [c for c in TEXT_COLUMNS if c in ds.column_names]
    ds = ds.map(tokenize, batched=True, remove_columns=columns)
    length = max_length or max(len(ids) for ids in ds["input_ids"])

    def pad(batch: dict[str, list]) -> dict[str, list]:
        out = {"input_ids": [], "attention_mask": [], "labels": []}
        for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
            if len(ids) > length:
                raise ValueError(f"a row has {len(ids)} tokens, more than max_length={length}")
            fill = length - len(ids)
            out["input_ids"].append(ids + [tokenizer.pad_token_id] * fill)
            out["attention_mask"].append([1] * len(ids) + [0] * fill)
            out["labels"].append(labels + [-100] * fill)
        return out

    return ds.map(pad, batched=True)
