"""Synthetic skills: the Skill-It paper's LEGO and digit addition, the CPU-learnable table fold; a local word-level
tokenizer, a small byte-level BPE and tiny models."""

from .accuracy import CurveRecorder, answer_accuracy
from .addition import addition_skills, make_addition
from .fold import fold_skills, fold_table, make_fold
from .lego import lego_parent, lego_skills, make_lego, skill_counts
from .models import make_tiny_model, tiny_llama_config, tiny_model_config
from .tokenizer import build_bpe_tokenizer, build_tokenizer, encode

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
]
