"""LMCollator: right padding, answer-only label masks, rows given as lists, numpy views or tensors."""

import numpy as np
import pytest
import torch

from hf_skillit.collator import IGNORE_INDEX, LMCollator, SkillTaggingCollator
from hf_skillit.streams import SKILL_KEY


def test_padding_masks_and_labels_by_hand():
    rows = [
        {"input_ids": [5, 6, 7]},  # no labels: every token scored
        {"input_ids": np.array([8, 9], dtype=np.int32), "labels": np.array([-100, 9])},  # answer-only mask
        {"input_ids": torch.tensor([4]), "attention_mask": [0]},  # masked token: not scored
    ]
    batch = LMCollator(pad_token_id=0, pad_to_multiple_of=4)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 9, 0, 0], [4, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    ignore = IGNORE_INDEX
    assert batch["labels"].tolist() == [[5, 6, 7, ignore], [ignore, 9, ignore, ignore], [ignore] * 4]
    assert all(t.dtype == torch.long for t in batch.values())


def test_row_with_mismatched_labels_is_named():
    with pytest.raises(ValueError, match="row 1 of the batch has 1 labels for 2 input_ids"):
        LMCollator(pad_token_id=0)([{"input_ids": [1], "labels": [1]}, {"input_ids": [1, 2], "labels": [2]}])


def test_skill_tags_travel_with_the_batch():
    rows = [{"input_ids": [1, 2], SKILL_KEY: 2}, {"input_ids": [3], SKILL_KEY: 0}]
    batch = SkillTaggingCollator(LMCollator(pad_token_id=0))(rows)
    assert batch[SKILL_KEY].tolist() == [2, 0] and batch["input_ids"].tolist() == [[1, 2], [3, 0]]
