"""The TAPO objective as pure functions on tensors (no trainer, no model): testable by hand.

Shapes: B rollouts (B = groups * group_size, a group = n anchor + n positive rollouts of one
prompt, consecutive), T completion tokens. `mask` (B, T) marks real completion tokens.

    loss = token_mean over kept tokens of
             policy(ratio, A)                       DAPO clip-higher + dual clip
           + beta * kl_ref                          optional, off by default (beta = 0)
           - gamma * k3(own || negative)            inter-class term, pushes away from x-
           + eta * (-logp_theta)                    entropy minimisation
    kept = tokens of groups whose mean accuracy is strictly between 0.01 and 0.99

Values follow the Fine-R1 release (see /work/shared/DESIGN.md "TAPO"):

    >>> import torch
    >>> group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0]), group_size=4)
    tensor([ 0.8660, -0.8660,  0.8660, -0.8660])
    >>> dynamic_sampling_keep(torch.tensor([1.0, 1.0, 0.0, 1.0]), group_size=2)
    tensor([False, False,  True,  True])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TAPOCoefficients:
    """Every coefficient of the objective, the paper's values as defaults."""

    epsilon_low: float = 0.2
    epsilon_high: float = 0.28  # DAPO clip-higher
    dual_clip: float = 3.0  # c: caps the loss of negative-advantage tokens at -A * c
    gamma: float = 0.01  # weight of the inter-class k3 term
    eta: float = 0.03  # weight of the entropy (-logp) term
    beta: float = 0.0  # reference-model KL, off in the released scripts
    k3_log_clamp: float = 20.0  # d clamped to [-20, 20]
    k3_clamp: float = 10.0  # k3 clamped to [-10, 10]
    advantage_eps: float = 1e-6


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """(r - group mean) / (group std + eps) over consecutive groups of `group_size` (unbiased std)."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    return ((grouped - mean) / (std + eps)).view(-1)


def dynamic_sampling_keep(accuracy: torch.Tensor, group_size: int, low: float = 0.01,
                          high: float = 0.99) -> torch.Tensor:
    """Per rollout: True when its group's mean accuracy is strictly between `low` and `high`
    (the release's filter_low 0.01 / filter_high 0.99, examples/tapo/tapo_3b.sh; with 0/1
    accuracies: the group mixed right and wrong rollouts).

    >>> dynamic_sampling_keep(torch.tensor([0.0, 0.0, 0.0, 0.5]), group_size=4, low=0.1).tolist()
    [True, True, True, True]
    """
    if accuracy.numel() % group_size:
        raise ValueError(f"{accuracy.numel()} accuracies do not split into groups of {group_size}")
    mean = accuracy.view(-1, group_size).float().mean(dim=1)
    keep = (mean > low) & (mean < high)
    return keep.repeat_interleave(group_size)


def policy_loss(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.28,
    dual_clip: float | None = 3.0,
) -> torch.Tensor:
    """Per-token clipped surrogate: clip-higher PPO, plus dual clip for negative advantages.

    advantages: (B,) or (B, T). Returns (B, T) losses (to be minimised).
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    ratio = torch.exp(torch.clamp(logp - logp_old.detach(), -20.0, 20.0))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    loss = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        # Dual clip: for A < 0 a huge ratio would give an unbounded loss; cap it at -A * c.
        loss = torch.where(advantages < 0, torch.minimum(loss, -advantages * dual_clip), loss)
    return loss


def k3_to_negative(
    logp_own: torch.Tensor,
    logp_negative: torch.Tensor,
    log_clamp: float = 20.0,
    k3_clamp: float = 10.0,
) -> torch.Tensor:
    """Per-token k3 estimate of KL(own image || negative image) for the sampled tokens.

    d = clamp(logp_neg_old - logp_theta_own, -20, 20); k3 = clamp(exp(d) - d - 1, -10, 10).
    The negative branch is a constant (computed before the update, no gradient).
    """
    d = torch.clamp(logp_negative.detach() - logp_own, -log_clamp, log_clamp)
    return torch.clamp(torch.exp(d) - d - 1, -k3_clamp, k3_clamp)


def reference_kl(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(theta || ref), as GRPO's beta term."""
    d = logp_ref.detach() - logp
    return torch.exp(d) - d - 1


def tapo_loss(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    logp_negative: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    keep: torch.Tensor | None = None,
    coef: TAPOCoefficients = TAPOCoefficients(),
    logp_ref: torch.Tensor | None = None,
    normalizer: torch.Tensor | float | None = None,
    policy_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The TAPO loss, token-level averaged over kept tokens, and its parts (detached).

    keep: (B,) bool from `dynamic_sampling_keep` (None keeps all). normalizer: the token count
    to divide by (default: kept tokens of this batch; a trainer passes the accumulation
    window's count). policy_weights: optional per-token importance weights (vLLM correction).
    """
    weights = mask.float()
    if keep is not None:
        weights = weights * keep.float().unsqueeze(1)
    if normalizer is None:
        normalizer = weights.sum().clamp(min=1.0)

    def token_mean(x: torch.Tensor) -> torch.Tensor:
        return (x * weights).sum() / normalizer

    per_token_policy = policy_loss(
        logp, logp_old, advantages, coef.epsilon_low, coef.epsilon_high, coef.dual_clip
    )
    if policy_weights is not None:
        per_token_policy = per_token_policy * policy_weights
    policy = token_mean(per_token_policy)
    k3 = token_mean(k3_to_negative(logp, logp_negative, coef.k3_log_clamp, coef.k3_clamp))
    entropy = token_mean(-logp)
    loss = policy - coef.gamma * k3 + coef.eta * entropy
    parts = {"policy": policy.detach(), "k3_negative": k3.detach(), "neg_logp": entropy.detach()}
    if coef.beta != 0.0:
        if logp_ref is None:
            raise ValueError("beta != 0 needs the reference model's log-probs (logp_ref)")
        kl = token_mean(reference_kl(logp, logp_ref))
        loss = loss + coef.beta * kl
        parts["kl_ref"] = kl.detach()
    return loss, parts
