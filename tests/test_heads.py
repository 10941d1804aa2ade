"""Hazard head outputs on hand-computed hazards."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seqchurn.losses import hazard_nll
from seqchurn.models.heads import (
    HazardHead,
    hazards,
    p_churn,
    pooled_hazards,
    survival_at_edges,
    survival_curve,
    tau_median,
    tau_restricted_mean,
)

EDGES = [0, 30, 60]


def logits_of(h):
    h = torch.tensor(h, dtype=torch.float64)
    return torch.log(h / (1 - h))


def test_pooled_hazards_are_the_intercept_only_fit_the_head_starts_from():
    rng = np.random.default_rng(0)
    tau_bin = rng.integers(0, 4, size=500)  # 3 logits, bin 3 open
    observed = (rng.random(500) < 0.7) | (tau_bin == 0)
    prior = pooled_hazards(tau_bin, observed, 3)
    z = torch.logit(torch.tensor(prior, dtype=torch.float64)).expand(500, 3).clone()
    z.requires_grad_(True)
    hazard_nll(z, torch.as_tensor(tau_bin), torch.as_tensor(observed)).backward()
    assert float(z.grad.sum(0).abs().max()) < 1e-9  # the likelihood's stationary point
    head = HazardHead(in_dim=5, n_bins=4)
    head.init_bias(prior)
    out = torch.sigmoid(head(torch.zeros(2, 5)))
    assert torch.allclose(out, torch.tensor([prior, prior], dtype=out.dtype), atol=1e-6)
    assert pooled_hazards(np.array([0, 0]), np.array([True, True]), 2) == [1.0, 0.5]
    with pytest.raises(ValueError, match="prior hazards"):
        head.init_bias([0.5])


def test_head_shape():
    head = HazardHead(in_dim=7, n_bins=4)
    assert head(torch.randn(5, 7)).shape == (5, 3)
    with pytest.raises(ValueError):
        HazardHead(7, 1)


def test_survival_and_curve_by_hand():
    # S = [0.8, 0.4, 0.3]
    z = logits_of([[0.2, 0.5, 0.25]])
    torch.testing.assert_close(hazards(z), torch.tensor([[0.2, 0.5, 0.25]], dtype=torch.float64))
    torch.testing.assert_close(
        survival_at_edges(z), torch.tensor([[0.8, 0.4, 0.3]], dtype=torch.float64)
    )
    assert p_churn(z).item() == pytest.approx(0.2)
    s = survival_curve(z, EDGES, [-1, 0, 15, 30, 45, 60, 61, 90])[0].tolist()
    assert s[:6] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.35, 0.3])
    assert math.isnan(s[6]) and math.isnan(s[7])


def test_median_by_hand():
    z = logits_of(
        [[0.2, 0.5, 0.25], [0.6, 0.1, 0.1], [0.1, 0.1, 0.1], [0.2, 0.375, 0.5], [0.5, 0.1, 0.1]]
    )
    med = tau_median(z, EDGES).tolist()
    # row 0: S from 0.8 (d=0) to 0.4 (d=30) crosses 0.5 at 0.75 of the bin -> 22.5
    assert med[0] == pytest.approx(22.5)
    assert med[1] == 0.0  # h_0 >= 0.5
    assert math.isnan(med[2])  # S_2 = 0.729 > 0.5
    # row 3: S = [0.8, 0.5, 0.25] -> exactly 0.5 at d = 30
    assert med[3] == pytest.approx(30.0)
    assert med[4] == 0.0  # h_0 = 0.5 exactly


def test_restricted_mean_by_hand():
    z = logits_of([[0.2, 0.5, 0.25]])
    # 30 * (0.8 + 0.4) / 2 + 30 * (0.4 + 0.3) / 2 = 18 + 10.5
    assert tau_restricted_mean(z, EDGES).item() == pytest.approx(28.5)
    assert tau_restricted_mean(logits_of([[0.3]]), [0]).item() == 0.0


def test_restricted_mean_equals_integral_of_curve():
    z = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    edges = [0, 30, 60, 90, 180]
    days = torch.linspace(0, 180, 1801, dtype=torch.float64)
    curve = survival_curve(z, edges, days).numpy()
    want = (
        np.trapezoid(curve, days.numpy(), axis=1)
        if hasattr(np, "trapezoid")
        else np.trapz(curve, days.numpy())
    )
    np.testing.assert_allclose(tau_restricted_mean(z, edges).numpy(), want, rtol=1e-9)
    # the median is where the curve crosses 0.5
    med = tau_median(z, edges)
    ok = ~torch.isnan(med) & (med > 0)
    if ok.any():
        at = torch.stack(
            [survival_curve(z[i : i + 1], edges, med[i : i + 1])[0, 0] for i in torch.where(ok)[0]]
        )
        torch.testing.assert_close(at, torch.full_like(at, 0.5))


def test_edges_validated():
    with pytest.raises(ValueError, match="one finite edge per logit"):
        survival_curve(logits_of([[0.2, 0.5]]), EDGES, [0])
    with pytest.raises(ValueError, match="increase strictly"):
        tau_median(logits_of([[0.2, 0.5, 0.1]]), [0, 60, 30])
