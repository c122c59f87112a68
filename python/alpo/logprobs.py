"""Summed log-probabilities of continuations given prompts: what the ref stage stores and the
ALPO loss compares.

Three ways to the same numbers:

- `plain`: each (prompt, continuation) pair is one right-padded row (`continuation_logps`).
- `pair`: a record's prompt once, its chosen and rejected continuations as two branches after
  it; a block attention mask keeps each branch from seeing the other, and each branch's
  position ids restart where the prompt ends, so every token sees exactly what it would see in
  its own plain row.
- `chain`: consecutive records whose prompts extend one another (a window's records of one
  prefix stage: record i+1's prompt is record i's plus segment i's prefix text) share one
  sequence: the trunk (the longest prompt) with a chosen and a rejected branch hanging off the
  trunk where each record's prompt ends. A 25-segment window costs about one prompt pass
  instead of 50.

Only the positions that predict continuation tokens get logits (`logits_to_keep`), and the
log-probs are summed in float64. The ref stage and training call `record_logps` with the same
model dtype and packing, so reference and policy log-probs are computed alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from alpo.exceptions import ConfigError

__all__ = ["PACKINGS", "chains", "continuation_logps", "record_logps"]

PACKINGS = ("chain", "pair", "plain")


def continuation_logps(
    model: Any,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    *,
    pad_id: int = 0,
) -> Any:
    """The plain padded path. A float64 tensor: for each row, the sum of log p(continuation
    token | everything before it). Gradients flow when the model's parameters require them."""
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


def chains(prompts: Sequence[Sequence[int]]) -> list[list[int]]:
    """Consecutive records grouped so that, within a group, every prompt is a prefix of the
    group's longest one (the trunk). Exact whatever the records are: grouping only decides what
    shares a sequence, never what a token sees."""
    groups: list[list[int]] = []
    trunk: Sequence[int] = ()
    for i, p in enumerate(prompts):
        if groups and _extends(trunk, p):
            groups[-1].append(i)
            trunk = p if len(p) > len(trunk) else trunk
        else:
            groups.append([i])
            trunk = p
    return groups


def _extends(a: Sequence[int], b: Sequence[int]) -> bool:
    """One of the two is a prefix of the other."""
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    return list(long[: len(short)]) == list(short)


@dataclass
class _Row:
    """One packed sequence: tokens with their positions and what each may attend to."""

    ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    # token q attends keys k < trunk_limit[q], and keys branch_start[q] <= k <= q
    trunk_limit: list[int] = field(default_factory=list)
    branch_start: list[int] = field(default_factory=list)
    # (sequence index of the predicting position, target token, record, 0 chosen / 1 rejected)
    targets: list[tuple[int, int, int, int]] = field(default_factory=list)


def _pack(
    group: list[int],
    prompts: Sequence[Sequence[int]],
    chosen: Sequence[Sequence[int]],
    rejected: Sequence[Sequence[int]],
) -> _Row:
    row = _Row()
    trunk = max((prompts[i] for i in group), key=len)
    n = len(trunk)
    row.ids = list(trunk)
    row.positions = list(range(n))
    row.trunk_limit = list(range(1, n + 1))
    row.branch_start = [1 << 40] * n  # no branch part: causal over the trunk
    for i in group:
        p = len(prompts[i])
        for side, branch in ((0, chosen[i]), (1, rejected[i])):
            start = len(row.ids)
            for k, token in enumerate(branch):
                # token k is predicted by the prompt's last token (k = 0) or branch token k-1
                row.targets.append((p - 1 if k == 0 else start + k - 1, token, i, side))
            row.ids += branch
            row.positions += range(p, p + len(branch))
            row.trunk_limit += [p] * len(branch)
            row.branch_start += [start] * len(branch)
    return row


def record_logps(
    model: Any,
    prompts: Sequence[Sequence[int]],
    chosen: Sequence[Sequence[int]],
    rejected: Sequence[Sequence[int]],
    *,
    packing: str = "chain",
    pad_id: int = 0,
) -> tuple[Any, Any]:
    """Float64 tensors of the summed log-probs of each record's chosen and rejected
    continuation, computed the `packing` way (`chain`, `pair` or `plain`; same numbers)."""
    import torch

    n = len(prompts)
    if not n or len(chosen) != n or len(rejected) != n:
        raise ValueError("need a chosen and a rejected continuation per prompt, at least one")
    if packing == "plain":
        both = continuation_logps(model, [*prompts, *prompts], [*chosen, *rejected], pad_id=pad_id)
        return both[:n], both[n:]
    if packing not in PACKINGS:
        raise ConfigError(f"unknown packing {packing!r} (use {', '.join(PACKINGS)})")
    # A DeepSpeed engine wraps the model (its own `config` is DeepSpeed's).
    inner = getattr(model, "module", model)
    kind = getattr(getattr(inner, "config", None), "_attn_implementation", "sdpa")
    if kind not in ("sdpa", "eager"):
        raise ConfigError(
            f"packing = {packing} needs model.attn_implementation sdpa or eager (not {kind}); "
            "or use packing = plain"
        )
    groups = chains(prompts) if packing == "chain" else [[i] for i in range(n)]
    rows = [_pack(g, prompts, chosen, rejected) for g in groups]
    device = next(model.parameters()).device
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    # Padding attends to itself only, so no softmax row is empty.
    trunk_limit = torch.zeros((len(rows), width), dtype=torch.long)
    branch_start = torch.arange(width).repeat(len(rows), 1)
    keep = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, r in enumerate(rows):
        m = len(r.ids)
        ids[b, :m] = torch.tensor(r.ids)
        positions[b, :m] = torch.tensor(r.positions)
        trunk_limit[b, :m] = torch.tensor(r.trunk_limit)
        branch_start[b, :m] = torch.tensor(r.branch_start)
        for pos, _, _, _ in r.targets:
            keep[b, pos] = True
    q = torch.arange(width).view(1, width, 1)
    k = torch.arange(width).view(1, 1, width)
    allowed = (k < trunk_limit.unsqueeze(2)) | ((k >= branch_start.unsqueeze(2)) & (k <= q))
    dtype = next(model.parameters()).dtype
    mask = (
        allowed.unsqueeze(1)
        if kind == "sdpa"
        else torch.zeros(allowed.shape, dtype=dtype)
        .masked_fill(~allowed, torch.finfo(dtype).min)
        .unsqueeze(1)
    )
    out = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        logits_to_keep=keep.to(device),  # logits come flattened, row by row, in position order
        use_cache=False,
    )
    logits = out.logits.reshape(-1, out.logits.shape[-1])
    column = torch.full((len(rows), width), -1, dtype=torch.long)
    column[keep] = torch.arange(int(keep.sum()))
    flat, tokens, slots = [], [], []
    for b, r in enumerate(rows):
        for pos, token, record, side in r.targets:
            flat.append(int(column[b, pos]))
            tokens.append(token)
            slots.append(side * n + record)
    picked = logits[torch.tensor(flat, device=device)].float()
    token_t = torch.tensor(tokens, dtype=torch.long, device=device)
    logp = picked.gather(1, token_t.unsqueeze(1)).squeeze(1) - torch.logsumexp(picked, dim=-1)
    totals = torch.zeros(2 * n, dtype=torch.float64, device=device)
    totals = totals.index_add(0, torch.tensor(slots, device=device), logp.double())
    return totals[:n], totals[n:]
