"""Build the offline real-text demo data of the out-of-domain setting (`recipes/text_ood_demo.yaml`).

Training skills are four sources of real text that ship with Debian or with Python on this machine:

- `python`: the standard library's source code (the running interpreter's, tests left out);
- `man`: English manual pages of commands (sections 1 and 8), roff markup stripped;
- `licenses`: licence texts (`/usr/share/common-licenses`, `/usr/share/doc/*/copyright`);
- `changelogs`: Debian package changelogs (`/usr/share/doc/*/changelog.Debian.gz`).

The evaluation skills are two local lm-eval tasks built from OTHER text, never trained on:

- `pydoc_lastword` (`loglikelihood`): the last word of sentences from the docstrings of standard-library modules
  held out of the `python` source (one module in five, chosen by a hash of its path);
- `manpage_choice` (`multiple_choice`): the last word of sentences from manual pages of sections 5 and 7 (file
  formats, overviews), among four words (the others are last words of other such sentences).

It also trains a byte-level BPE tokenizer on the training text. Everything is deterministic: files are read in
sorted order, held-out choices hash paths, shuffles use fixed seeds. The output directory gets `train/*.jsonl`,
`tasks/*.yaml` + `tasks/*.jsonl` (an lm-eval `include_path`), `tokenizer/` and `manifest.json` (counts, what was
read, hashes of the files written).

    python benchmarks/out_of_domain/text_sources.py --out runs/text_ood/data
"""

from __future__ import annotations

import argparse
import ast
import glob
import gzip
import hashlib
import json
import os
import random
import re
import sys
import sysconfig
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

SOURCES = ("python", "man", "licenses", "changelogs")
TASKS = ("pydoc_lastword", "manpage_choice")
CHUNK_CHARS = 240  # about 64 tokens of the 2048-token BPE below
VOCAB_SIZE = 2048
SPECIAL_TOKENS = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<pad>"}
CHOICES = 4

# Roff requests whose arguments are running text; every other request line is layout and is dropped.
_TEXT_MACROS = {"B", "I", "BR", "BI", "IB", "IR", "RB", "RI", "SM", "SB", "SH", "SS", "IP", "TP", "Nd"}
_ROFF_ESCAPES = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\\((em|en)"), "-"),
    (re.compile(r"\\\(..|\\\[[^\]]*\]|\\\*(\(..|\[[^\]]*\]|.)"), ""),  # special characters, strings
    (re.compile(r"\\[hvwlLNxXkbo]'[^']*'|\\[sz][-+]?\d*"), ""),  # motions, sizes
    (re.compile(r"\\[-e]"), "-"),
    (re.compile(r"\\[&|^/,%:c]|\\$"), ""),
    (re.compile(r"\\ "), " "),
]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PLAIN_WORDS = re.compile(r"^[A-Za-z][A-Za-z ,;'()-]*$")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _held_out(path: str) -> bool:
    """One stdlib module in five, by a hash of its path relative to the stdlib (stable across machines)."""
    return int(_sha(path)[:8], 16) % 5 == 0


def _read_gz(path: str) -> str:
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def roff_to_text(source: str) -> str:
    """Plain text of a manual page: text-bearing macros keep their arguments, escapes are removed."""
    lines = []
    for line in source.splitlines():
        if line.startswith((".", "'")):
            macro, _, rest = line[1:].strip().partition(" ")
            if macro not in _TEXT_MACROS:
                if lines and lines[-1]:
                    lines.append("")  # a layout request ends a paragraph
                continue
            line = rest.replace('"', "")
        for pattern, replacement in _ROFF_ESCAPES:
            line = pattern.sub(replacement, line)
        lines.append(line.strip())
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _paragraphs(text: str) -> Iterator[str]:
    for block in re.split(r"\n\s*\n", text):
        joined = " ".join(block.split())
        if joined:
            yield joined


def _chunks(documents: Iterable[str], size: int = CHUNK_CHARS) -> Iterator[str]:
    """Consecutive pieces of about `size` characters, cut at line ends (a whole long line is one piece)."""
    for document in documents:
        piece: list[str] = []
        length = 0
        for line in document.splitlines():
            piece.append(line)
            length += len(line) + 1
            if length >= size:
                chunk = "\n".join(piece).strip()
                if chunk:
                    yield chunk[: 2 * size]
                piece, length = [], 0
        chunk = "\n".join(piece).strip()
        if len(chunk) > size // 4:
            yield chunk


# ----- sources --------------------------------------------------------------------------------------------------


def stdlib_files(stdlib: str) -> tuple[list[str], list[str]]:
    """Standard-library module files (tests, site-packages and demos excluded): (training, held out)."""
    skip = re.compile(r"(^|/)(tests?|idle_test|site-packages|lib2to3|__pycache__|turtledemo)(/|$)|(^|/)test_")
    files = sorted(
        os.path.relpath(p, stdlib)
        for p in glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True)
        if not skip.search(os.path.relpath(p, stdlib))
    )
    return [f for f in files if not _held_out(f)], [f for f in files if _held_out(f)]


def man_pages(sections: Iterable[str], root: str = "/usr/share/man") -> list[str]:
    return sorted(p for s in sections for p in glob.glob(os.path.join(root, f"man{s}", "*.gz")))


def license_files() -> list[str]:
    return sorted(glob.glob("/usr/share/common-licenses/*")) + sorted(glob.glob("/usr/share/doc/*/copyright"))


def changelog_files() -> list[str]:
    return sorted(glob.glob("/usr/share/doc/*/changelog.Debian.gz"))


def _read(path: str) -> str:
    if path.endswith(".gz"):
        return _read_gz(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def source_documents(name: str, stdlib: str) -> tuple[list[str], list[str]]:
    """(files, texts) of a training source."""
    if name == "python":
        files = [os.path.join(stdlib, f) for f in stdlib_files(stdlib)[0]]
        return files, [_read(f) for f in files]
    if name == "man":
        files = man_pages("18")
        return files, [roff_to_text(_read(f)) for f in files]
    files = license_files() if name == "licenses" else changelog_files()
    return files, [_read(f) for f in files if os.path.isfile(f)]


# ----- evaluation tasks -----------------------------------------------------------------------------------------


def docstrings(path: str) -> list[str]:
    """Module, class and function docstrings of a Python file, in source order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        tree = ast.parse(_read(path))
    nodes = [
        tree,
        *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))),
    ]
    return [doc for node in nodes if (doc := ast.get_docstring(node))]


def last_word_items(paragraphs: Iterable[str]) -> list[tuple[str, str]]:
    """(context, last word) of plain prose sentences of 8 to 30 words ending with a lower-case word and a period."""
    items, seen = [], set()
    for paragraph in paragraphs:
        for sentence in _SENTENCE_END.split(paragraph):
            words = sentence.split()
            if not 8 <= len(words) <= 30 or not sentence.endswith(".") or sentence.endswith(".."):
                continue
            body, last = " ".join(words[:-1]), words[-1][:-1]
            if not re.fullmatch(r"[a-z]{3,}", last) or not _PLAIN_WORDS.match(body) or sentence in seen:
                continue
            seen.add(sentence)
            items.append((body, last))
    return items


def pydoc_rows(stdlib: str, limit: int, seed: int) -> list[dict[str, str]]:
    held_out = [os.path.join(stdlib, f) for f in stdlib_files(stdlib)[1]]
    items = last_word_items(p for f in held_out for doc in docstrings(f) for p in _paragraphs(doc))
    random.Random(seed).shuffle(items)
    # The target carries its own leading space: lm-eval does not insert one for output_type loglikelihood.
    return [{"context": context, "target": f" {word}"} for context, word in items[:limit]]


def manpage_rows(limit: int, seed: int) -> list[dict[str, object]]:
    pages = man_pages("57")
    items = last_word_items(p for f in pages for p in _paragraphs(roff_to_text(_read(f))))
    rng = random.Random(seed)
    rng.shuffle(items)
    items = items[:limit]
    pool = sorted({word for _, word in items})
    rows = []
    for context, word in items:
        choices = [word, *rng.sample([w for w in pool if w != word], CHOICES - 1)]
        rng.shuffle(choices)
        rows.append({"context": context, "choices": choices, "label": choices.index(word)})
    return rows


TASK_YAML = {
    "pydoc_lastword": """\
task: pydoc_lastword
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{target}}}}"
metric_list:
  - metric: perplexity
  - metric: acc
""",
    "manpage_choice": """\
task: manpage_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
""",
}


# ----- building -------------------------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    count = 0
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE tokenizer (GPT-2 style: a word carries its leading space) trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    special = list(dict.fromkeys(SPECIAL_TOKENS.values()))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)


def build(out: str | os.PathLike, chunks_per_source: int = 3000, task_rows: int = 300, seed: int = 0) -> dict:
    """Write the demo data into `out` and return its manifest."""
    out = Path(out)
    stdlib = sysconfig.get_paths()["stdlib"]
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "tasks").mkdir(parents=True, exist_ok=True)
    manifest: dict = {"python": sys.version.split()[0], "stdlib": stdlib, "sources": {}, "tasks": {}, "sha256": {}}
    tokenizer_text = []
    for name in SOURCES:
        files, texts = source_documents(name, stdlib)
        chunks = list(_chunks(texts))
        # An even spread over the source (not its first files), in a fixed order.
        chunks = [
            chunks[i]
            for i in sorted(random.Random(seed).sample(range(len(chunks)), min(len(chunks), chunks_per_source)))
        ]
        _write_jsonl(out / "train" / f"{name}.jsonl", ({"text": c} for c in chunks))
        tokenizer_text += chunks
        manifest["sources"][name] = {"files": len(files), "chunks": len(chunks), "chars": sum(map(len, chunks))}

    rows = {"pydoc_lastword": pydoc_rows(stdlib, task_rows, seed), "manpage_choice": manpage_rows(task_rows, seed)}
    for name in TASKS:
        data = (out / "tasks" / f"{name}.jsonl").resolve()
        manifest["tasks"][name] = _write_jsonl(data, rows[name])
        (out / "tasks" / f"{name}.yaml").write_text(TASK_YAML[name].format(data=data))

    train_tokenizer(tokenizer_text).save_pretrained(out / "tokenizer")
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"):
        manifest["sha256"][str(path.relative_to(out))] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/text_ood/data", help="output directory")
    parser.add_argument("--chunks-per-source", type=int, default=3000)
    parser.add_argument("--task-rows", type=int, default=300, help="rows of each lm-eval task")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    manifest = build(args.out, args.chunks_per_source, args.task_rows, args.seed)
    print(json.dumps({k: manifest[k] for k in ("python", "sources", "tasks")}, indent=1))


if __name__ == "__main__":
    main()
