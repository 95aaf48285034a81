"""A skill's text made into training rows: tokenization, and what happens to documents longer than the context.

Three ways, chosen with `SkillItConfig.packing` and `SkillItConfig.long_documents`, each applied to one skill's
split at a time, so a row never holds text of two skills:

- **packing** (continual pre-training): every document gets EOS at its end, the skill's documents are concatenated
  in their order and cut into blocks of exactly `max_length` tokens. This is how pre-training pipelines cut domain
  data (Megatron's blended datasets and DoReMi's pipeline pack each domain's token stream into its own blocks), and
  how transformers' `run_clm.py` groups texts. Packing is global over the split (not per `map` batch), so it is
  idempotent and only the last partial block of a training split is dropped; a validation split keeps it as a
  shorter last row, so every held-out token is scored. The mixture's p is then a share of tokens: every row has
  `max_length` of them.
- **chunk**: each document (EOS at its end) is cut into rows of at most `max_length` tokens, the last one shorter.
  Nothing is dropped and no row spans two documents; rows differ in length, so p is a share of rows.
- **truncate** (the default, as `tokenizer(..., truncation=True)`): a document keeps its first `max_length`
  tokens and loses the rest. Nothing else changes, so runs made before these options are unchanged.

Validation is split from training by document before any of this (`SkillSet.from_dict`/`from_column`), so packed
training blocks never hold validation text. Rows that already have `input_ids` are kept as they are, except that
packing packs them too (with their `labels`, so answer-only masks survive); their documents get no EOS from here.

`SplitCounts` records, for each map-style split prepared here, the documents and tokens it started from and the rows
and tokens it kept: the dry run and the run summary show how many tokens truncation (or packing's last block) drops.
Streaming splits are prepared lazily, as they are read, and have no counts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.table import InMemoryTable

from .settings import LONG_DOCUMENTS

__all__ = ["SplitCounts", "check_context", "longest_row", "model_context", "prepare_split"]

STREAM_BATCH_DOCS = 64
"""Documents a stream tokenizes at a time: `datasets`' default of 1000 whole documents would read and tokenize far
ahead of what a round uses (and of what a resume re-reads)."""

_TOKEN_COLUMNS = ("input_ids", "labels")  # what packing and chunking carry; an attention mask of a block is all ones


@dataclass(frozen=True)
class SplitCounts:
    """Token counts of one prepared split.

    Attributes:
        documents: rows before preparation (documents).
        tokens: their tokens (with the EOS this module adds).
        rows: rows after preparation (blocks, pieces or truncated documents).
        kept: tokens in those rows.
    """

    documents: int
    tokens: int
    rows: int
    kept: int

    @property
    def dropped(self) -> int:
        """Tokens lost to truncation (or to the last partial block of a packed training split)."""
        return self.tokens - self.kept

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "dropped": self.dropped}


def _lengths(dataset: datasets.Dataset) -> np.ndarray:
    """Every row's number of tokens (`input_ids`)."""
    if len(dataset) == 0:
        return np.zeros(0, dtype=np.int64)
    column = dataset.select_columns(["input_ids"]).with_format("arrow")[:].column("input_ids")
    return pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)


def _tokenizer_encode(
    tokenizer: Callable[..., Mapping[str, list]], text_field: str, eos_token_id: int | None
) -> Callable[[dict[str, list]], dict[str, list]]:
    def encode(batch: dict[str, list]) -> dict[str, list]:
        ids = tokenizer(batch[text_field])["input_ids"]
        if eos_token_id is not None:
            ids = [[*row, eos_token_id] for row in ids]
        return {"input_ids": ids}

    return encode


def _list_array(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    if offsets[-1] < 2**31:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
    return pa.LargeListArray.from_arrays(pa.array(offsets.astype(np.int64)), values)


def _from_table(table: pa.Table, source: datasets.Dataset, what: str) -> datasets.Dataset:
    # An explicit fingerprint (the source's and what was done to it) skips hashing the table.
    fingerprint = hashlib.sha256(f"{source._fingerprint}-{what}".encode()).hexdigest()[:16]
    return datasets.Dataset(InMemoryTable(table), fingerprint=fingerprint)


def _flat(table: pa.Table, columns: tuple[str, ...]) -> dict[str, pa.Array]:
    return {c: pc.list_flatten(table.column(c)).combine_chunks() for c in columns}


def pack(dataset: datasets.Dataset, block_size: int, drop_remainder: bool) -> datasets.Dataset:
    """The rows' token columns concatenated in order and cut into rows of `block_size` tokens (the last one shorter
    unless `drop_remainder`). Zero-copy: the blocks are new offsets over the same token values."""
    columns = tuple(c for c in _TOKEN_COLUMNS if c in dataset.column_names)
    flat = _flat(dataset.select_columns(list(columns)).with_format("arrow")[:], columns)
    total = len(flat["input_ids"])
    blocks = total // block_size if drop_remainder else -(-total // block_size)
    offsets = np.minimum(np.arange(blocks + 1, dtype=np.int64) * block_size, total)
    table = pa.table({c: _list_array(offsets, values.slice(0, int(offsets[-1]))) for c, values in flat.items()})
    return _from_table(table, dataset, f"pack-{block_size}-{drop_remainder}")


def _pieces(table: pa.Table, max_length: int) -> pa.Table:
    """Every row cut into consecutive rows of at most `max_length` tokens, its other columns repeated on each
    (a batched arrow `map` function)."""
    columns = tuple(c for c in _TOKEN_COLUMNS if c in table.column_names)
    lengths = pc.list_value_length(table.column("input_ids")).to_numpy(zero_copy_only=False).astype(np.int64)
    count = -(-lengths // max_length)
    ends = np.cumsum(lengths)
    first = np.repeat(ends - lengths, count)  # each piece's row start
    index = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    offsets = np.append(first + index * max_length, ends[-1] if len(ends) else 0)
    flat = _flat(table, columns)
    pieces = table.take(np.repeat(np.arange(len(lengths)), count))
    for name, values in flat.items():
        pieces = pieces.set_column(pieces.column_names.index(name), name, _list_array(offsets, values))
    return pieces


def _truncated(table: pa.Table, max_length: int) -> pa.Table:
    for name in _TOKEN_COLUMNS:
        if name in table.column_names:
            column = pc.list_slice(table.column(name), 0, max_length)
            table = table.set_column(table.column_names.index(name), name, column)
    return table


def _packed_stream(dataset: datasets.IterableDataset, block_size: int, columns: tuple[str, ...]) -> Iterator[dict]:
    """`pack` for a stream: blocks of `block_size` tokens as the documents are read (the remainder is carried)."""
    buffers: dict[str, list[int]] = {c: [] for c in columns}
    for row in dataset:
        for c in columns:
            buffers[c].extend(row[c])
        while len(buffers["input_ids"]) >= block_size:
            yield {c: buffers[c][:block_size] for c in columns}
            for c in columns:
                del buffers[c][:block_size]


def _pack_stream(dataset: datasets.IterableDataset, block_size: int) -> datasets.IterableDataset:
    # The columns to carry: from the features when known, else from the first row (one row read).
    names = dataset.features or next(iter(dataset.take(1)), {})
    columns = tuple(c for c in _TOKEN_COLUMNS if c in names)
    token = datasets.List(datasets.Value("int64"))
    return datasets.IterableDataset.from_generator(
        _packed_stream,
        gen_kwargs={"dataset": dataset, "block_size": block_size, "columns": columns},  # no lists: lists are shards
        features=datasets.Features({c: token for c in columns}),
    )


def prepare_split(
    dataset: datasets.Dataset | datasets.IterableDataset,
    skill: str,
    split: str,
    *,
    tokenizer: Callable[..., Mapping[str, list]] | None,
    text_field: str = "text",
    max_length: int | None = None,
    packing: bool = False,
    long_documents: str = "truncate",
    num_proc: int | None = None,
) -> tuple[datasets.Dataset | datasets.IterableDataset, SplitCounts | None]:
    """One skill's split as training rows (see the module docstring), and its `SplitCounts` (None when streaming).

    Args:
        dataset: the split: raw text in `text_field`, or rows with `input_ids`.
        skill, split: named in errors (`split` is `"train"` or `"validation"`).
        tokenizer: tokenizes text; its `eos_token_id` ends each document under packing and chunking.
        text_field: the text column.
        max_length: the block size under packing, else the longest row (None: rows as long as their documents).
        packing: pack the split into blocks of `max_length` tokens.
        long_documents: without packing, `"truncate"` or `"chunk"` documents longer than `max_length`.
        num_proc: processes of the tokenizing `map` (map-style splits).

    Raises:
        ValueError: naming the skill and split that has neither column, holds text without a tokenizer, packs
            without `max_length` or an EOS token, or has no tokens to pack.
    """
    if long_documents not in LONG_DOCUMENTS:
        raise ValueError(f"long_documents must be one of {LONG_DOCUMENTS}, got {long_documents!r}")
    if packing and max_length is None:
        raise ValueError("packing needs max_length: the number of tokens of a block")
    where = f"skill {skill!r} ({split})"
    streaming = isinstance(dataset, datasets.IterableDataset)
    columns = dataset.column_names
    tokenized_here = not (columns is not None and "input_ids" in columns)
    if tokenized_here:
        if columns is not None and text_field not in columns:
            raise ValueError(
                f"{where} has neither `input_ids` nor a {text_field!r} column to tokenize "
                f"(columns: {', '.join(columns)}); set dataset_text_field or tokenize the data first"
            )
        if tokenizer is None:
            raise ValueError(f"{where} holds raw text: pass processing_class= (a tokenizer)")
        eos = None
        if packing or long_documents == "chunk":
            eos = getattr(tokenizer, "eos_token_id", None)
            if eos is None:
                raise ValueError(f"{where}: the tokenizer has no eos_token, which ends each document when packing")
        kwargs: dict[str, Any] = {"batched": True, "remove_columns": [text_field] if columns else None}
        kwargs.update({"num_proc": num_proc} if not streaming else {"batch_size": STREAM_BATCH_DOCS})
        dataset = dataset.map(_tokenizer_encode(tokenizer, text_field, eos), **kwargs)
    before = None if streaming else _lengths(dataset)

    if packing:
        if streaming:
            return _pack_stream(dataset, max_length), None
        dataset = pack(dataset, max_length, drop_remainder=split == "train")
        if len(dataset) == 0:
            raise ValueError(
                f"{where} has {int(before.sum())} tokens, fewer than one block of max_length={max_length}: "
                "lower max_length, or add text"
            )
    elif tokenized_here and max_length is not None:
        cut = _pieces if long_documents == "chunk" else _truncated
        kwargs = {"batched": True, "fn_kwargs": {"max_length": max_length}}
        kwargs.update({"num_proc": num_proc} if not streaming else {"batch_size": STREAM_BATCH_DOCS})
        dataset = dataset.with_format("arrow").map(cut, **kwargs).with_format(None)
    if streaming:
        return dataset, None
    after = _lengths(dataset)
    return dataset, SplitCounts(len(before), int(before.sum()), len(after), int(after.sum()))


def model_context(model: Any) -> int | None:
    """The model's number of positions (`config.max_position_embeddings`), or None when it has none."""
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return context if isinstance(context, int) and context > 0 else None


def longest_row(data: datasets.Dataset) -> int:
    """The tokens of the longest row of a map-style split (0 when empty)."""
    lengths = _lengths(data)
    return int(lengths.max()) if len(lengths) else 0


def check_context(
    splits: Mapping[tuple[str, str], datasets.Dataset | datasets.IterableDataset],
    max_length: int | None,
    packing: bool,
    context: int | None,
) -> None:
    """Refuse rows the model cannot take, before anything trains: a block (`packing`) longer than the model's
    `context`, a map-style row longer than it (every row is measured), or a stream whose rows may reach a
    `max_length` above it. `splits` maps (skill, split) to the prepared data.

    A stream without `max_length` is checked through its validation rows only (its first documents, held out).
    """
    if context is None:
        return
    fix = (
        f"set max_length <= {context} (long documents are then truncated, or kept as several rows with "
        "long_documents='chunk' or packing=True)"
    )
    if packing and max_length > context:
        raise ValueError(
            f"max_length={max_length} (the block size of packing) is more than the model's context of {context} "
            f"positions (max_position_embeddings): set max_length <= {context}"
        )
    for (skill, split), data in splits.items():
        if isinstance(data, datasets.IterableDataset):
            if max_length is not None and max_length > context:
                raise ValueError(
                    f"skill {skill!r} ({split}) streams rows of up to max_length={max_length} tokens, more than the "
                    f"model's context of {context} positions (max_position_embeddings): {fix}"
                )
            continue
        longest = longest_row(data)
        if longest > context:
            let = f"max_length={max_length} lets them through; " if max_length is not None else ""
            raise ValueError(
                f"skill {skill!r} ({split}) has rows of up to {longest} tokens, more than the model's context of "
                f"{context} positions (max_position_embeddings): {let}{fix}"
            )
