"""Summed log-probabilities of continuations given prompts: what the ref stage stores and the
ALPO loss compares.

`continuation_logps` is the plain padded path: each (prompt, continuation) pair is one right-
padded row, and the log-probs of the continuation's tokens are gathered and summed in float64.
Only the positions that predict continuation tokens get logits (`logits_to_keep`), which spares
most of the vocabulary projection on long prompts. The ref stage and training call this same
function with the same model dtype, so reference and policy log-probs are computed alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["continuation_logps"]


def continuation_logps(
    model: Any,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    *,
    pad_id: int = 0,
) -> Any:
    """A float64 tensor: for each row, the sum of log p(continuation token | everything before
    it). Gradients flow when the model's parameters require them."""
    import torch

    if len(prompts) != len(continuations) or not prompts:
        raise ValueError("need as many continuations as prompts, at least one")
    lengths = [len(p) + len(c) for p, c in zip(prompts, continuations, strict=True)]
    width = max(lengths)
    device = next(model.parameters()).device
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, (p, c) in enumerate(zip(prompts, continuations, strict=True)):
        seq = torch.tensor([*p, *c], dtype=torch.long)
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    # Position t predicts token t+1: continuation tokens start at len(prompt), so the logits
    # needed run from the shortest prompt's last position to the end.
    keep = width - min(len(p) for p in prompts) + 1
    out = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        logits_to_keep=keep,
        use_cache=False,
    )
    logps = torch.log_softmax(out.logits.float(), dim=-1)
    first = width - keep  # the sequence position of logits column 0
    totals = []
    for row, (p, c) in enumerate(zip(prompts, continuations, strict=True)):
        if not c:
            totals.append(logps.new_zeros((), dtype=torch.float64))
            continue
        cols = torch.arange(len(p) - 1, len(p) - 1 + len(c), device=device) - first
        targets = torch.tensor(list(c), dtype=torch.long, device=device)
        totals.append(logps[row, cols, targets].double().sum())
    return torch.stack(totals)
