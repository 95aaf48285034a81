"""Synthetic skills: the Skill-It paper's LEGO and digit addition, the CPU-learnable table fold; a local word-level
tokenizer, a small byte-level BPE and tiny models.

The names are imported on first use (PEP 562, as in `hf_skillit/__init__.py`): a recipe's `data.generator` and
`model.tiny` keys are checked against the generators' and `tiny_model_config`'s parameters without importing
torch, which `models` and `accuracy` need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# public name -> module defining it
_EXPORTS = {
    "CurveRecorder": "hf_skillit.synthetic.accuracy",
    "answer_accuracy": "hf_skillit.synthetic.accuracy",
    "addition_skills": "hf_skillit.synthetic.addition",
    "make_addition": "hf_skillit.synthetic.addition",
    "fold_skills": "hf_skillit.synthetic.fold",
    "fold_table": "hf_skillit.synthetic.fold",
    "make_fold": "hf_skillit.synthetic.fold",
    "lego_parent": "hf_skillit.synthetic.lego",
    "lego_skills": "hf_skillit.synthetic.lego",
    "make_lego": "hf_skillit.synthetic.lego",
    "skill_counts": "hf_skillit.synthetic.lego",
    "make_tiny_model": "hf_skillit.synthetic.models",
    "tiny_llama_config": "hf_skillit.synthetic.models",
    "tiny_model_config": "hf_skillit.synthetic.models",
    "build_bpe_tokenizer": "hf_skillit.synthetic.tokenizer",
    "build_tokenizer": "hf_skillit.synthetic.tokenizer",
    "encode": "hf_skillit.synthetic.tokenizer",
}

__all__ = [
    "CurveRecorder",
    "addition_skills",
    "answer_accuracy",
    "build_bpe_tokenizer",
    "build_tokenizer",
    "encode",
    "fold_skills",
    "fold_table",
    "lego_parent",
    "lego_skills",
    "make_addition",
    "make_fold",
    "make_lego",
    "make_tiny_model",
    "skill_counts",
    "tiny_llama_config",
    "tiny_model_config",
]  # = the keys of _EXPORTS

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)

if TYPE_CHECKING:  # static analysers and IDEs see the real imports
    from .accuracy import CurveRecorder, answer_accuracy
    from .addition import addition_skills, make_addition
    from .fold import fold_skills, fold_table, make_fold
    from .lego import lego_parent, lego_skills, make_lego, skill_counts
    from .models import make_tiny_model, tiny_llama_config, tiny_model_config
    from .tokenizer import build_bpe_tokenizer, build_tokenizer, encode
