"""The SmolLM2 GGUF for the GPU comparison: packing it into parts that fit a device call, reassembling and checking
it, and converting it with `hf_skillit.pretrained` as a user would (the smoke mode writes a tiny llama GGUF)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.gpu.settings import PART_BYTES, SMOLLM2_GGUF, SMOLLM2_SHA256, SMOLLM2_SIZE


def pack(folder: Path, gguf: Path | None) -> None:
    """Split the SmolLM2 GGUF into `folder/part1`, `folder/part2` (each well under a call's 64 MiB) and download the
    wheels the GPU image lacks into `folder/wheels` (Python 3.12, x86-64)."""
    from hf_skillit.pretrained import default_cache_dir, file_sha256

    gguf = gguf or default_cache_dir() / "downloads" / SMOLLM2_GGUF
    if not gguf.is_file() or file_sha256(gguf) != SMOLLM2_SHA256:
        raise SystemExit(f"{gguf} is not the SmolLM2 GGUF: run `hf-skillit fetch-model smollm2-135m` first")
    split_parts(gguf.read_bytes(), folder)
    wheels = folder / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    # The image has torch, accelerate, pyarrow, pandas, tokenizers, safetensors, huggingface-hub, but not datasets (and
    # its dill/multiprocess) nor gguf; transformers, peft, regex and fsspec are pinned to the versions tested here.
    pins = ["transformers==5.24.0", "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19", "gguf==0.19.0"]
    pins += ["regex==2026.11.19", "fsspec==2026.9.0", "peft==0.21.2"]  # peft: transformers' Trainer imports it
    platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in (17, 27, 28)] + ["--platform=manylinux2014_x86_64"]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version=3.12"]
    subprocess.run([*command, "--implementation=cp", *platforms, "-d", str(wheels), *pins], check=True)
    print(f"packed {folder}: part1, part2 and wheels; see docs/pretrained.md for the two device calls")


def split_parts(data: bytes, folder: Path, part_bytes: int = PART_BYTES) -> None:
    """`folder/part1/<name>.01` (the first `part_bytes`) and `folder/part2/<name>.02` (the rest)."""
    for index, piece in enumerate((data[:part_bytes], data[part_bytes:]), start=1):
        part = folder / f"part{index}"
        part.mkdir(parents=True, exist_ok=True)
        (part / f"{SMOLLM2_GGUF}.{index:02d}").write_bytes(piece)


def _assemble(parts_root: Path, work: Path) -> Path:
    from hf_skillit.pretrained import file_sha256

    pieces = sorted(parts_root.glob(f"part*/{SMOLLM2_GGUF}.*"))
    if not pieces:
        raise SystemExit(f"no parts of {SMOLLM2_GGUF} under {parts_root}/part*/ (see --pack)")
    out = work / SMOLLM2_GGUF
    with open(out, "wb") as f:
        for piece in pieces:
            f.write(piece.read_bytes())
    size = out.stat().st_size
    if size != SMOLLM2_SIZE or file_sha256(out) != SMOLLM2_SHA256:
        raise SystemExit(
            f"the parts {[p.parent.name for p in pieces]} make {size} bytes, not the SmolLM2 GGUF "
            f"({SMOLLM2_SIZE} bytes): a part is missing (the first call's machine was not kept warm?) or damaged"
        )
    return out


def prepare_model(args: argparse.Namespace, work: Path) -> tuple[Path, dict[str, Any]]:
    """The converted checkpoint folder, going through `hf_skillit.pretrained` as a user would."""
    from hf_skillit.pretrained import default_cache_dir, fetch_model, write_llama_gguf
    from hf_skillit.synthetic import build_bpe_tokenizer, make_tiny_model, tiny_llama_config

    cache = work / "cache"
    if args.smoke or args.tiny_model:
        tokenizer = build_bpe_tokenizer()
        model = make_tiny_model(tiny_llama_config(tokenizer), seed=0)
        gguf = write_llama_gguf(model, tokenizer, work / "tiny-llama.gguf")
        source = "tiny llama (hidden 32, 2 layers) written as GGUF by write_llama_gguf"
        name = "a tiny llama (smoke mode)" if args.smoke else "a tiny llama (development run)"
    elif args.gguf_parts:
        gguf, source = (
            _assemble(Path(args.gguf_parts), work),
            f"SmolLM2-135M-Instruct Q4_1 GGUF ({SMOLLM2_SHA256[:12]})",
        )
        name = "SmolLM2-135M"
    else:
        gguf = Path(args.gguf) if args.gguf else default_cache_dir() / "downloads" / SMOLLM2_GGUF
        if not gguf.is_file():
            raise SystemExit(
                f"{gguf} not found: pass --gguf, --gguf-parts, or run `hf-skillit fetch-model smollm2-135m`"
            )
        source, name = f"GGUF {gguf}", "SmolLM2-135M"
    start = time.time()
    folder = fetch_model(gguf, cache_dir=cache)
    return folder, {"name": name, "source": source, "gguf": str(gguf), "convert_s": round(time.time() - start, 1)}
