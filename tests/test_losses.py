"""hazard_nll against a naive per-user loop and a hand-computed case."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seqchurn.losses import hazard_nll


def naive_hazard_nll(logits, tau_bin, observed, lam=1.0, pos_weight=1.0, gamma=0.0):
    """Per-user loop straight from DESIGN section 5."""
    out = []
    for z, k, o in zip(logits.tolist(), tau_bin.tolist(), observed.tolist(), strict=True):
        h = [1 / (1 + math.exp(-v)) for v in z]
        terms = []
        for j in range(len(h)):
            if (o and j < k) or (not o and j <= k):
                terms.append(-math.log(1 - h[j]))
            elif o and j == k:
                terms.append(-math.log(h[j]))
            else:
                terms.append(0.0)
        y0 = o and k == 0
        p_t = h[0] if y0 else 1 - h[0]
        bin0 = terms[0] * (pos_weight if y0 else 1.0) * (1 - p_t) ** gamma
        out.append(bin0 + lam * sum(terms[1:]))
    return torch.tensor(out, dtype=torch.float64)


def random_case(n=64, n_logits=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, n_logits, generator=g, dtype=torch.float64) * 2
    tau_bin = torch.randint(0, n_logits + 1, (n,), generator=g)  # includes the open bin K-1
    observed = torch.rand(n, generator=g) < 0.6
    # make sure the corner cases are there
    tau_bin[:4] = torch.tensor([n_logits, 0, 0, n_logits])
    observed[:4] = torch.tensor([True, False, True, False])
    return logits, tau_bin, observed


@pytest.mark.parametrize(
    "lam,pos_weight,gamma", [(1.0, None, 0.0), (0.3, 2.5, 0.0), (1.0, None, 2.0), (0.7, 3.0, 1.5)]
)
def test_matches_naive_loop(lam, pos_weight, gamma):
    logits, tau_bin, observed = random_case()
    got = hazard_nll(
        logits,
        tau_bin,
        observed,
        lam=lam,
        pos_weight=pos_weight,
        focal_gamma=gamma,
        reduction="none",
    )
    want = naive_hazard_nll(
        logits, tau_bin, observed, lam, 1.0 if pos_weight is None else pos_weight, gamma
    )
    torch.testing.assert_close(got, want)
    mean = hazard_nll(logits, tau_bin, observed, lam=lam, pos_weight=pos_weight, focal_gamma=gamma)
    total = hazard_nll(
        logits,
        tau_bin,
        observed,
        lam=lam,
        pos_weight=pos_weight,
        focal_gamma=gamma,
        reduction="sum",
    )
    torch.testing.assert_close(mean, want.mean())
    torch.testing.assert_close(total, want.sum())


def test_lam_zero_is_bce_on_bin0():
    logits, tau_bin, observed = random_case(seed=1)
    y = (observed & (tau_bin == 0)).double()
    got = hazard_nll(logits, tau_bin, observed, lam=0.0)
    torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(logits[:, 0], y))
    pw = torch.tensor(3.0, dtype=torch.float64)
    got = hazard_nll(logits, tau_bin, observed, lam=0.0, pos_weight=pw)
    torch.testing.assert_close(
        got, F.binary_cross_entropy_with_logits(logits[:, 0], y, pos_weight=pw)
    )


def test_hand_computed():
    # hazards 0.2, 0.5, 0.25 (3 logits, K = 4 bins)
    h = torch.tensor([0.2, 0.5, 0.25], dtype=torch.float64)
    logits = torch.log(h / (1 - h)).repeat(5, 1)
    tau_bin = torch.tensor([0, 2, 3, 1, 0])
    observed = torch.tensor([True, True, True, False, False])
    want = torch.tensor(
        [
            -math.log(0.2),  # churned: event at bin 0
            -math.log(0.8) - math.log(0.5) - math.log(0.25),  # observed in bin 2
            -math.log(0.8)
            - math.log(0.5)
            - math.log(0.75),  # observed in the open bin: survival only
            -math.log(0.8) - math.log(0.5),  # censored at bin 1's edge
            -math.log(0.8),  # censored at 0: only y = 0
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(hazard_nll(logits, tau_bin, observed, reduction="none"), want)
    # lam = 0.5 halves everything beyond bin 0; user 2: -log 0.8 + 0.5 * (-log 0.5 - log 0.75)
    got = hazard_nll(logits, tau_bin, observed, lam=0.5, reduction="none")[2]
    assert got.item() == pytest.approx(0.22314355 + 0.5 * (0.69314718 + 0.28768207))


def test_stable_for_extreme_logits():
    logits = torch.tensor([[80.0, -80.0], [-80.0, 80.0]], requires_grad=True)
    loss = hazard_nll(logits, torch.tensor([0, 1]), torch.tensor([True, True]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_shape_errors():
    logits = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="tau_bin and observed"):
        hazard_nll(logits, torch.zeros(4, 1, dtype=torch.long), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="logits must be"):
        hazard_nll(
            torch.zeros(4), torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="tau_bin must lie"):
        hazard_nll(logits, torch.full((4,), 5), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="reduction"):
        hazard_nll(
            logits,
            torch.zeros(4, dtype=torch.long),
            torch.ones(4, dtype=torch.bool),
            reduction="avg",
        )
