"""Dynamic sampling with refill: a generation batch made only of groups worth learning from.

The Fine-R1 release (TAPO/verl/trainer/ray_trainer.py `_make_batch_data`, PKU-ICST-MIPL/
FineR1_ICLR2026 at 84cdc5c) keeps a group (the 2n rollouts of one prompt) only when its mean
accuracy is strictly between `filter_low` 0.01 and `filter_high` 0.99
(examples/tapo/tapo_3b.sh), and generates more groups until the rollout batch is full.
`TAPOTrainer` (train/tapo.py) does the same: it generates a round, keeps the mixed groups
(`train.tapo_loss.dynamic_sampling_keep`), generates further rounds for what is missing
(`round_size`), and trains on the first kept groups.

TRL's generation output (`GRPOTrainer._generate_and_score_completions`) is a dict of
per-rollout rows, padded per round: prompt tensors on the left, completion tensors on the
right, `mm_token_type_ids` over both, images one entry per rollout once
`trl.trainer.utils.split_pixel_values_by_grid` has run. `take` picks rows of one round and
`join` puts rounds together, re-padding each side:

    >>> import torch
    >>> a = {"prompt_ids": torch.tensor([[0, 7], [5, 6]]), "completion_ids": torch.tensor([[1], [2]]),
    ...      "advantages": torch.tensor([0.5, -0.5]), "num_items_in_batch": torch.tensor(2)}
    >>> b = {"prompt_ids": torch.tensor([[8]]), "completion_ids": torch.tensor([[3, 4]]),
    ...      "advantages": torch.tensor([1.0]), "num_items_in_batch": torch.tensor(2)}
    >>> joined = join([take(a, [1]), b], pad_token_id=0)
    >>> joined["prompt_ids"].tolist(), joined["completion_ids"].tolist()
    ([[5, 6], [0, 8]], [[2, 0], [3, 4]])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

# How each key of TRL 1.16's generation output is laid out (train mode). A key not listed here
# is refused by `join`: a TRL upgrade that adds one must be looked at, not joined blindly.
PROMPT_SIDE = {"prompt_ids": "pad", "prompt_mask": 0}  # (B, P), padded on the left
COMPLETION_SIDE = {  # (B, C), padded on the right
    "completion_ids": "pad", "completion_mask": 0, "tool_mask": 1,
    "old_per_token_logps": 0.0, "ref_per_token_logps": 0.0, "sampling_per_token_logps": 0.0,
    "importance_sampling_ratio": 0.0, "negative_per_token_logps": 0.0,
}
BOTH_SIDES = {"token_type_ids": 0, "mm_token_type_ids": 0}  # (B, P + C): prompt part, then completion part
PER_ROW = {"advantages", "tapo_keep", "num_images", "num_tiles",  # one value per rollout
           # per image, a list with one entry per rollout after split_pixel_values_by_grid
           "pixel_values", "image_grid_thw", "image_position_ids", "pixel_attention_mask",
           "spatial_shapes", "image_sizes"}
SCALARS = {"num_items_in_batch", "tapo_kept_tokens"}  # batch totals: the caller recomputes them


def round_size(missing: int, kept: int, generated: int, quota: int) -> int:
    """Groups to generate in the next round: enough to fill `missing` places at the kept rate
    seen so far (a whole `quota` when nothing was kept yet), never more than `quota`.

    >>> round_size(missing=3, kept=2, generated=8, quota=8)   # 1 in 4 kept: 12 needed, capped
    8
    >>> round_size(missing=1, kept=6, generated=8, quota=8)
    2
    >>> round_size(missing=4, kept=0, generated=8, quota=8)
    8
    """
    if missing <= 0:
        return 0
    if kept <= 0:
        return quota
    return max(1, min(quota, math.ceil(missing * generated / kept)))


def take(batch: dict[str, Any], rows: Sequence[int]) -> dict[str, Any]:
    """The rows `rows` of a generation output (images already split per rollout)."""
    index = torch.tensor(list(rows), dtype=torch.long)
    picked: dict[str, Any] = {}
    for key, value in batch.items():
        if value is None or key in SCALARS:
            picked[key] = value
        elif isinstance(value, torch.Tensor):
            picked[key] = value[index.to(value.device)]
        elif isinstance(value, list):
            picked[key] = [value[i] for i in rows]
        else:
            raise ValueError(f"generation output {key!r} ({type(value).__name__}) has no rows to pick")
    return picked


def _pad(tensor: torch.Tensor, width: int, value: float, left: bool) -> torch.Tensor:
    missing = width - tensor.size(1)
    if missing == 0:
        return tensor
    return F.pad(tensor, (missing, 0) if left else (0, missing), value=value)


def join(batches: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """One generation output from several rounds' rows (scalars dropped: recompute them)."""
    if not batches:
        raise ValueError("nothing to join")
    prompt_width = max(b["prompt_ids"].size(1) for b in batches)
    completion_width = max(b["completion_ids"].size(1) for b in batches)
    joined: dict[str, Any] = {}
    for key in batches[0]:
        values = [b[key] for b in batches]
        if key in SCALARS:
            continue
        if any(v is None for v in values):
            joined[key] = None
        elif key in PROMPT_SIDE:
            fill = pad_token_id if PROMPT_SIDE[key] == "pad" else PROMPT_SIDE[key]
            joined[key] = torch.cat([_pad(v, prompt_width, fill, left=True) for v in values])
        elif key in COMPLETION_SIDE:
            fill = pad_token_id if COMPLETION_SIDE[key] == "pad" else COMPLETION_SIDE[key]
            per_token = all(v.size(1) == b["completion_ids"].size(1) for b, v in zip(batches, values, strict=True))
            if not per_token and any(v.size(1) != 1 for v in values):
                raise ValueError(f"generation output {key!r} is neither per token nor per rollout")
            # one column per rollout (TRL's sequence-level importance ratio): nothing to pad
            joined[key] = torch.cat([_pad(v, completion_width, fill, left=False) for v in values]
                                    if per_token else values)
        elif key in BOTH_SIDES:
            parts = []
            for b, v in zip(batches, values, strict=True):
                cut = b["prompt_ids"].size(1)
                parts.append(torch.cat([_pad(v[:, :cut], prompt_width, BOTH_SIDES[key], left=True),
                                        _pad(v[:, cut:], completion_width, BOTH_SIDES[key], left=False)], dim=1))
            joined[key] = torch.cat(parts)
        elif key in PER_ROW:
            joined[key] = torch.cat(values) if isinstance(values[0], torch.Tensor) else [x for v in values for x in v]
        else:
            raise ValueError(
                f"unknown generation output {key!r}: train/refill.py must learn how it is laid out "
                "before dynamic sampling can join rounds (or set dynamic_sampling=false)"
            )
    return joined
