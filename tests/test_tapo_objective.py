"""The TAPO objective (train/tapo_loss.py) against values computed independently here.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_tapo_objective.py
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from train.tapo_loss import (
    TAPOCoefficients,
    dynamic_sampling_keep,
    group_advantages,
    k3_to_negative,
    policy_loss,
    reference_kl,
    tapo_loss,
)


def test_group_advantage_spans_anchor_and_positive_rollouts():
    # One group = 3 anchor rollouts + 3 positive rollouts; a second group follows.
    anchor, positive = [1.0, 0.0, 0.1], [1.0, 1.0, 0.0]
    second = [0.1, 0.1, 1.0, 0.0, 0.0, 0.1]
    rewards = torch.tensor(anchor + positive + second)
    got = group_advantages(rewards, group_size=6)
    expected = []
    for group in (anchor + positive, second):
        mean, std = statistics.mean(group), statistics.stdev(group)  # unbiased, as torch.std
        expected += [(r - mean) / (std + 1e-6) for r in group]
    assert got.tolist() == pytest.approx(expected, rel=1e-6)
    # Normalising the anchor half alone would give other numbers: the group is the 2n.
    alone = group_advantages(torch.tensor(anchor), group_size=3)
    assert alone.tolist() != pytest.approx(got[:3].tolist(), rel=1e-3)


def test_group_advantage_of_a_uniform_group_is_zero_and_finite():
    got = group_advantages(torch.tensor([0.9, 0.9, 0.9, 0.9]), group_size=4)
    assert torch.isfinite(got).all() and got.abs().max() == 0


def test_group_size_must_divide():
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(torch.zeros(6), group_size=4)


def test_dynamic_sampling_drops_all_right_and_all_wrong_groups():
    accuracy = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0], dtype=torch.float)
    keep = dynamic_sampling_keep(accuracy, group_size=4)
    assert keep.tolist() == [False] * 8 + [True] * 4


def test_k3_matches_formula_and_clamps():
    logp_own = torch.tensor([[-1.0, -2.0, -0.5, -30.0, -1.0]])
    logp_neg = torch.tensor([[-1.5, -0.5, -0.5, -1.0, -6.0]])
    got = k3_to_negative(logp_own, logp_neg)[0].tolist()
    expected = []
    for own, neg in zip(logp_own[0].tolist(), logp_neg[0].tolist(), strict=True):
        d = max(-20.0, min(20.0, neg - own))
        expected.append(max(-10.0, min(10.0, math.exp(d) - d - 1)))
    assert got == pytest.approx(expected, rel=1e-5)
    assert got[2] == 0.0  # same log-prob under both images: no divergence
    assert got[3] == 10.0  # d = 20 (clamped from 29): exp(20) clamped to 10
    assert got[4] == pytest.approx(math.exp(-5.0) + 5.0 - 1)  # d = -5: inside both clamps
    low = k3_to_negative(torch.tensor([[-1.0]]), torch.tensor([[-40.0]])).item()
    assert low == 10.0  # d clamped to -20 gives 19, then k3 clamped to 10


def test_minimising_the_loss_increases_kl_to_the_negative():
    torch.manual_seed(0)
    vocab, steps = 6, 4
    own_logits = torch.randn(steps, vocab, requires_grad=True)
    neg_logits = torch.randn(steps, vocab)
    tokens = torch.tensor([1, 3, 0, 2])

    def logps(logits):
        return torch.log_softmax(logits, -1).gather(1, tokens[:, None]).T  # (1, T)

    def true_kl():  # sum over tokens of KL(own || negative) per position
        p = torch.log_softmax(own_logits, -1)
        q = torch.log_softmax(neg_logits, -1)
        return (p.exp() * (p - q)).sum().item()

    neg = logps(neg_logits).detach()
    mask = torch.ones(1, steps)
    before_k3 = k3_to_negative(logps(own_logits), neg).sum().item()
    before_kl = true_kl()
    optimiser = torch.optim.SGD([own_logits], lr=0.5)
    coef = TAPOCoefficients(gamma=1.0, eta=0.0)
    for _ in range(20):
        lp = logps(own_logits)
        # advantage 0: only the k3 term moves the parameters
        loss, _ = tapo_loss(lp, lp.detach(), neg, torch.zeros(1), mask, coef=coef)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after_k3 = k3_to_negative(logps(own_logits), neg).sum().item()
    assert after_k3 > before_k3
    assert true_kl() > before_kl


def test_tapo_loss_sign_and_weights_of_each_term():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]])
    neg = torch.tensor([[-2.0, -1.0], [-0.5, -1.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([0.5, -1.0])
    coef = TAPOCoefficients()
    loss, parts = tapo_loss(logp, logp, neg, adv, mask, coef=coef)
    tokens = [(0, 0), (0, 1), (1, 0)]
    # ratio 1 everywhere: policy token loss = -A
    policy = sum(-adv[i].item() for i, _ in tokens) / 3
    k3 = 0.0
    for i, t in tokens:
        d = neg[i, t].item() - logp[i, t].item()
        k3 += math.exp(d) - d - 1
    k3 /= 3
    entropy = sum(-logp[i, t].item() for i, t in tokens) / 3
    assert parts["policy"].item() == pytest.approx(policy)
    assert parts["k3_negative"].item() == pytest.approx(k3, rel=1e-6)
    assert parts["neg_logp"].item() == pytest.approx(entropy)
    assert loss.item() == pytest.approx(policy - 0.01 * k3 + 0.03 * entropy, rel=1e-6)


def test_entropy_term_lowers_uncertainty_when_minimised():
    # eta * mean(-logp): its gradient raises the log-prob of the sampled tokens.
    logp = torch.tensor([[-1.2, -0.7, -2.0]], requires_grad=True)
    mask = torch.ones(1, 3)
    coef = TAPOCoefficients(gamma=0.0, eta=0.03)
    loss, _ = tapo_loss(logp, logp.detach(), logp.detach(), torch.zeros(1), mask, coef=coef)
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([-0.03 / 3] * 3)


@pytest.mark.parametrize(
    ("ratio", "adv", "expected"),
    [
        (1.1, 1.0, -1.1),  # inside the trust region
        (1.5, 1.0, -1.28),  # clip-higher: eps_high = 0.28
        (0.5, 1.0, -0.5),  # A > 0, low ratio: unclipped minimum
        (0.5, -1.0, 0.8),  # A < 0: clipped at 1 - eps_low
        (2.0, -1.0, 2.0),  # A < 0, ratio above 1: unclipped (max)
        (5.0, -1.0, 3.0),  # dual clip: capped at -A * c = 3
        (50.0, -2.0, 6.0),
    ],
)
def test_policy_loss_clip_higher_and_dual_clip(ratio, adv, expected):
    logp = torch.tensor([[math.log(ratio)]])
    got = policy_loss(logp, torch.zeros(1, 1), torch.tensor([adv]), 0.2, 0.28, 3.0)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_without_dual_clip_the_negative_advantage_loss_is_unbounded():
    logp = torch.tensor([[math.log(5.0)]])
    got = policy_loss(logp, torch.zeros(1, 1), torch.tensor([-1.0]), 0.2, 0.28, None)
    assert got.item() == pytest.approx(5.0)


def test_gradients_flow_only_through_the_own_image_branch():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    logp_old = torch.tensor([[-1.1, -1.9]], requires_grad=True)
    neg = torch.tensor([[-3.0, -0.5]], requires_grad=True)
    ref = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    coef = TAPOCoefficients(beta=0.1)
    loss, _ = tapo_loss(logp, logp_old, neg, torch.tensor([1.0]), torch.ones(1, 2), coef=coef, logp_ref=ref)
    loss.backward()
    assert logp.grad is not None and logp.grad.abs().sum() > 0
    assert neg.grad is None and logp_old.grad is None and ref.grad is None
    # the k3 gradient wrt the own log-prob, computed by hand: d/dlogp of -gamma*(e^d - d - 1)/N
    # with d = neg - logp is -gamma * (1 - e^d) / N.
    logp2 = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    k3_only = TAPOCoefficients(gamma=0.01, eta=0.0)
    loss2, _ = tapo_loss(logp2, logp2.detach(), neg.detach(), torch.zeros(1), torch.ones(1, 2), coef=k3_only)
    loss2.backward()
    expected = [-0.01 * (1 - math.exp(n - own)) / 2 for n, own in zip([-3.0, -0.5], [-1.0, -2.0], strict=True)]
    assert logp2.grad[0].tolist() == pytest.approx(expected, rel=1e-5)


def test_kept_groups_only_and_token_level_averaging():
    # 2 groups of 2; the first is all-correct (dropped), the second mixed (kept).
    logp = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0], [-2.0, -4.0, 0.0], [-1.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.float)
    keep = dynamic_sampling_keep(torch.tensor([1.0, 1.0, 1.0, 0.0]), group_size=2)
    coef = TAPOCoefficients(gamma=0.0, eta=1.0)
    _, parts = tapo_loss(logp, logp, logp, torch.zeros(4), mask, keep=keep, coef=coef)
    # token mean over the 3 kept tokens (2 + 1), not the mean of per-sequence means
    assert parts["neg_logp"].item() == pytest.approx((2.0 + 4.0 + 1.0) / 3)
    assert parts["neg_logp"].item() != pytest.approx(((2.0 + 4.0) / 2 + 1.0) / 2)


def test_reference_kl_is_optional_and_off_by_default():
    logp = torch.tensor([[-1.0]])
    ref = torch.tensor([[-2.0]])
    off, parts = tapo_loss(logp, logp, logp, torch.zeros(1), torch.ones(1, 1))
    assert "kl_ref" not in parts
    on, parts = tapo_loss(logp, logp, logp, torch.zeros(1), torch.ones(1, 1), coef=TAPOCoefficients(beta=0.5), logp_ref=ref)
    kl = math.exp(-1.0) + 1.0 - 1
    assert parts["kl_ref"].item() == pytest.approx(kl)
    assert (on - off).item() == pytest.approx(0.5 * kl)
    assert reference_kl(logp, logp).item() == 0.0
    with pytest.raises(ValueError, match="logp_ref"):
        tapo_loss(logp, logp, logp, torch.zeros(1), torch.ones(1, 1), coef=TAPOCoefficients(beta=0.5))
