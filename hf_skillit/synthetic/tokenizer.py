"""Word-level tokenizer for the synthetic tasks and a small byte-level BPE stand-in for a pretrained model's, both
built locally (no hub access), and answer-masked encoding that works with any tokenizer (word-level, or byte-level
BPE such as SmolLM2's)."""

from __future__ import annotations

import string
from collections.abc import Iterable

from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .addition import make_addition
from .lego import make_lego

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


def build_bpe_tokenizer(split_digits: bool = True) -> PreTrainedTokenizerFast:
    """A small byte-level BPE (320 tokens, SmolLM2's special tokens) trained on LEGO and addition text, built
    locally: a stand-in for a pretrained model's tokenizer in tests and smoke runs. With ``split_digits``
    (SmolLM2's behaviour) digits are pre-tokenized alone, so ``" 1"`` is ``" "`` + ``"1"``; without it (GPT-2's),
    ``" 1"`` can be one token."""
    texts = list(make_lego(300, k=5, seed=7)["text"]) + list(make_addition(300, seed=7)["text"])
    backend = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits
        else byte_level
    )
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=specials[0],
        bos_token=specials[1],
        eos_token=specials[2],
        pad_token=specials[2],
    )


def answer_span(prompt: str, answer: str, text: str) -> tuple[int, int]:
    """Character span ``[start, end)`` of the answer inside ``text``.

    ``text`` must start with ``prompt``; after optional whitespace the answer follows. The answer may carry the
    separating space itself (``" 1"``): only its non-space characters are the answer, and the space stays with the
    prompt side.
    """
    core = answer.lstrip()
    if not text.startswith(prompt) or not core:
        raise ValueError(f"`text` must start with `prompt` followed by `answer`; got text {text!r}, prompt {prompt!r}")
    rest = text[len(prompt) :]
    start = len(prompt) + len(rest) - len(rest.lstrip())
    if not text.startswith(core, start):
        raise ValueError(f"`text` must start with `prompt` followed by `answer` ({answer!r}); got text {text!r}")
    return start, start + len(core)


def _answer_positions(tokenizer, prompt: str, answer: str, text: str, ids: list[int], offsets) -> range:
    """Token positions of the answer in ``ids`` (the tokens of ``text``).

    Byte-level BPE tokenizers may split ``" 1"`` into ``" "`` and ``"1"`` (SmolLM2) or keep it whole (GPT-2): the
    answer tokens are the ones overlapping the answer's characters, whatever happens to the space before it. A
    token that also covers prompt characters, or text after the answer, would make the answer-only loss score
    something else, so it is an error.
    """
    start, end = answer_span(prompt, answer, text)
    if offsets is None:  # slow tokenizer: the prompt with its trailing space must tokenize as a prefix of the text
        before = tokenizer(text[:start], add_special_tokens=False)["input_ids"]
        upto = tokenizer(text[:end], add_special_tokens=False)["input_ids"]
        if upto[: len(before)] != before or ids[: len(upto)] != upto or len(upto) == len(before):
            raise ValueError(f"the tokenizer does not split {text!r} at the start and end of the answer {answer!r}")
        return range(len(before), len(upto))
    hits = [i for i, (s, e) in enumerate(offsets) if s < end and e > start and e > s]
    if not hits:
        raise ValueError(f"no token of {text!r} covers the answer {answer!r}")
    first, last = hits[0], hits[-1]
    if text[offsets[first][0] : start].strip() or offsets[last][1] > end:
        raise ValueError(
            f"the tokenizer merges the answer {answer!r} with its neighbours in {text!r} "
            f"(tokens {[text[s:e] for s, e in offsets[first : last + 1]]}): an answer-only loss would score more than "
            "the answer"
        )
    return range(first, last + 1)


def encode(
    ds: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    answer_only: bool = True,
    max_length: int | None = None,
) -> Dataset:
    """Tokenize ``text`` + eos into ``input_ids``, ``attention_mask``, ``labels``, scoring the ``answer`` tokens.

    ``text`` must be ``prompt``, optional whitespace, then ``answer`` (see `answer_span`). The answer tokens are
    found from the tokenizer's character offsets, so any tokenizer works: word-level, byte-level BPE that splits
    ``" 1"`` into ``" "`` and ``"1"`` (the space is then a prompt token and the digit alone is scored) or keeps it
    whole. Tokenizers without offsets (slow ones) must tokenize the prompt with its trailing space as a prefix of the
    text.

    ``labels`` is -100 (not scored) on padding and, with ``answer_only``, everywhere except the answer tokens;
    otherwise it equals ``input_ids`` on every real token. All rows are right-padded to ``max_length`` (default:
    the longest row), so the default data collator can stack them. Text columns are removed, the rest (``skill``,
    ids) kept.
    """
    with_offsets = getattr(tokenizer, "is_fast", False)

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        texts = tokenizer(batch["text"], add_special_tokens=False, return_offsets_mapping=with_offsets)
        input_ids, labels = [], []
        for row, (prompt, answer, text) in enumerate(
            zip(batch["prompt"], batch["answer"], batch["text"], strict=True)
        ):
            tokens = texts["input_ids"][row]
            offsets = texts["offset_mapping"][row] if with_offsets else None
            answer_tokens = _answer_positions(tokenizer, prompt, answer, text, tokens, offsets)
            ids = tokens + [tokenizer.eos_token_id]
            scored = answer_tokens if answer_only else range(len(ids))
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
