"""Tiny causal LMs built from configs (no hub access) for the synthetic tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING

# torch and transformers are imported by the functions that use them: a recipe's `model.tiny` keys are checked
# against `tiny_model_config`'s parameters without them (hf_skillit.recipes.schema.signature_schema).
if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

FAMILIES = ("gpt_neox", "llama", "gpt2")
# The families that share transformers' common size names (and rotary positions), by their config class.
_ROTARY_CONFIGS = {"gpt_neox": "GPTNeoXConfig", "llama": "LlamaConfig"}


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
    lr tried by the feasibility search (``benchmarks/RESULTS.md``) learned more of a LEGO mixture within a few thousand steps, and two
    layers run about twice as fast as four (see the feasibility section of ``benchmarks/RESULTS.md``).

    ``tokenizer`` (optional) supplies ``vocab_size`` and the pad/bos/eos ids. ``rotary_fraction`` is the share of
    each head rotated by RoPE (gpt_neox and llama; gpt2 has learned absolute positions). ``kwargs`` go to the
    config class unchanged (for gpt_neox and llama, an ``intermediate_size`` there replaces the 4x MLP).
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
    import transformers

    if family == "gpt2":
        # GPT-2 names the sizes its own way, and defaults to 0.1 dropout everywhere, which only slows these
        # noiseless tasks down.
        dropout = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
        return transformers.GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            n_positions=max_position_embeddings,
            **{**dropout, **kwargs},
        )
    if family not in _ROTARY_CONFIGS:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return getattr(transformers, _ROTARY_CONFIGS[family])(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        **{"intermediate_size": 4 * hidden_size, **kwargs},
    )


def tiny_llama_config(tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """SmolLM2's layout in miniature (llama, grouped-query attention, tied embeddings), sized to ``tokenizer``:
    hidden 32, 2 layers, 4 heads, 2 key-value heads, MLP 64, 128 positions. For tests and smoke runs of the GGUF
    path (``hf_skillit.pretrained.write_llama_gguf``), with a tokenizer such as ``build_bpe_tokenizer()``."""
    sizes = dict(hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=128)
    return tiny_model_config(
        "llama", tokenizer=tokenizer, **sizes, intermediate_size=64, num_key_value_heads=2, tie_word_embeddings=True
    )


def make_tiny_model(config: PretrainedConfig | None = None, seed: int = 0, **config_kwargs) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_config`` on ``config`` (or ``tiny_model_config(**config_kwargs)``), with the
    initial weights fixed by ``seed``."""
    import torch
    from transformers import AutoModelForCausalLM

    config = config or tiny_model_config(**config_kwargs)
    # Initialisers draw from the global generator: seed it inside a fork so the caller's stream is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config)
