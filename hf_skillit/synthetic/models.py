"""Tiny causal LMs built from configs (no hub access) for the synthetic tasks."""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

FAMILIES = ("gpt_neox", "llama", "gpt2")


def tiny_model_config(
    family: str = "gpt_neox",
    vocab_size: int | None = None,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    max_position_embeddings: int = 64,
    rotary_fraction: float | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    **kwargs,
) -> PretrainedConfig:
    """Config of a small ``family`` model (``"gpt_neox"``, ``"llama"`` or ``"gpt2"``) with a 4x MLP and no dropout.

    The defaults (GPT-NeoX, hidden 128, 2 layers, 4 heads) are the CPU recipe's model: no width, rotary fraction or
    lr tried in ``benchmarks/feasibility.py`` learned more of a LEGO mixture within a few thousand steps, and two
    layers run about twice as fast as four (see the feasibility section of ``benchmarks/RESULTS.md``).

    ``tokenizer`` (optional) supplies ``vocab_size`` and the pad/bos/eos ids. ``rotary_fraction`` is the share of
    each head rotated by RoPE (gpt_neox and llama; gpt2 has learned absolute positions). ``kwargs`` go to the
    config class unchanged.
    """
    if tokenizer is not None:
        vocab_size = vocab_size or len(tokenizer)
        kwargs = {
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            **kwargs,
        }
    if vocab_size is None:
        raise ValueError("pass `vocab_size` or `tokenizer`")
    if rotary_fraction is not None:
        if family == "gpt2":
            raise ValueError("gpt2 uses learned absolute positions, not rotary embeddings")
        kwargs.setdefault("rope_parameters", {"rope_type": "default", "partial_rotary_factor": rotary_fraction})
    if family == "gpt_neox":
        return GPTNeoXConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=4 * hidden_size,
            max_position_embeddings=max_position_embeddings,
            **kwargs,
        )
    if family == "llama":
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=4 * hidden_size,
            max_position_embeddings=max_position_embeddings,
            **kwargs,
        )
    if family == "gpt2":
        # GPT-2 defaults to 0.1 dropout everywhere, which only slows these noiseless tasks down.
        dropout = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
        return GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            n_positions=max_position_embeddings,
            **{**dropout, **kwargs},
        )
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def make_tiny_model(config: PretrainedConfig | None = None, seed: int = 0, **config_kwargs) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_config`` on ``config`` (or ``tiny_model_config(**config_kwargs)``), with the
    initial weights fixed by ``seed``."""
    config = config or tiny_model_config(**config_kwargs)
    # Initialisers draw from the global generator: seed it inside a fork so the caller's stream is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config)
