"""The ALPO objective: a weighted, per-segment DPO loss with per-segment beta.

For segment record i with policy and reference log-probs of its chosen and rejected
continuations (each summed over the continuation's tokens):

    h_i = beta_i * ((logp_c - ref_c) - (logp_r - ref_r))
    L   = sum_i w_i * -log sigmoid(h_i) / Z

Z depends on `normalizer`: `step` (default) is the sum of w over the whole optimizer step,
across accumulation steps and ranks, passed in as `weight_total`; `micro` is the sum of w in
this micro-batch (the official release: at one record per micro-batch the weight cancels);
`none` is 1 (the paper's formula as written). With every weight 1, constant beta and `micro`,
this is DPO's sigmoid loss averaged over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alpo.exceptions import ConfigError

__all__ = ["NORMALIZERS", "LossStats", "alpo_loss", "reward_stats"]

NORMALIZERS = ("step", "micro", "none")


def alpo_loss(
    policy_chosen: Any,
    policy_rejected: Any,
    ref_chosen: Any,
    ref_rejected: Any,
    beta: Any,
    weight: Any,
    normalizer: str = "step",
    weight_total: float | None = None,
) -> Any:
    """The scalar loss tensor of a batch of segment records (1-D tensors, one entry each)."""
    import torch.nn.functional as F

    if normalizer not in NORMALIZERS:
        raise ConfigError(f"unknown normalizer {normalizer!r} (use step, micro or none)")
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    losses = -F.logsigmoid(beta * margin)
    total = (weight * losses).sum()
    if normalizer == "none":
        return total
    if normalizer == "micro":
        z = weight.sum()
    else:
        if weight_total is None:
            raise ConfigError("normalizer 'step' needs weight_total (the step's sum of weights)")
        z = weight_total
    return total / z if float(z) > 0 else total * 0.0


@dataclass
class LossStats:
    """What DPO trainers log per step: implicit rewards, their margin, and accuracy."""

    chosen_reward: float
    rejected_reward: float
    margin: float
    accuracy: float


def reward_stats(
    policy_chosen: Any, policy_rejected: Any, ref_chosen: Any, ref_rejected: Any, beta: Any
) -> LossStats:
    """Mean implicit rewards beta * (logp - ref) of chosen and rejected, their mean margin, and
    the share of records whose chosen reward is higher."""
    import torch

    with torch.no_grad():
        chosen = beta * (policy_chosen - ref_chosen)
        rejected = beta * (policy_rejected - ref_rejected)
        return LossStats(
            chosen_reward=float(chosen.mean()),
            rejected_reward=float(rejected.mean()),
            margin=float((chosen - rejected).mean()),
            accuracy=float((chosen > rejected).float().mean()),
        )
