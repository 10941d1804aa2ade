"""Hazard head over time-to-churn bins and the tensor functions that turn its logits into outputs.

Bins: `edges` are the finite upper edges, edges[0] = 0. Bin 0 = {tau = 0} (churn),
bin k = (edges[k-1], edges[k]], the last bin (> edges[-1]) is open. A model with K bins has
K - 1 = len(edges) logits. All functions take and return torch tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class HazardHead(nn.Module):
    """Linear map from the user vector to K-1 hazard logits: (B, in_dim) -> (B, n_bins - 1)."""

    def __init__(self, in_dim: int, n_bins: int) -> None:
        super().__init__()
        if n_bins < 2:
            raise ValueError(f"n_bins must be >= 2 (bin 0 and the open last bin), got {n_bins}")
        self.n_bins = n_bins
        self.linear = nn.Linear(in_dim, n_bins - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def init_bias(self, prior: Sequence[float]) -> None:
        """Start each bin's logit at the logit of its pooled training hazard.

        From a zero bias every user starts at p = 0.5; on a log whose churn rate is near 1
        the early-stopped fit can end before the intercept has travelled that far, and the
        probabilities stay far below the rate while the ranking (AUROC) is already good.
        """
        h = torch.as_tensor(prior, dtype=self.linear.bias.dtype)
        if h.shape != self.linear.bias.shape:
            raise ValueError(f"need {self.linear.bias.numel()} prior hazards, got {h.numel()}")
        with torch.no_grad():
            self.linear.bias.copy_(torch.logit(h.clamp(1e-4, 1 - 1e-4)))


def pooled_hazards(tau_bin: np.ndarray, observed: np.ndarray, n_logits: int) -> list[float]:
    """Per-bin hazard of rows pooled (the intercept-only fit of the hazard likelihood).

    A row is at risk in bin k when tau_bin >= k (losses.hazard_nll's terms) and has its event
    there when observed with tau_bin == k; a bin nobody reaches gets 0.5.
    """
    tau_bin, observed = np.asarray(tau_bin, dtype=np.int64), np.asarray(observed, dtype=bool)
    rows = np.bincount(tau_bin, minlength=n_logits + 1)
    at_risk = rows[::-1].cumsum()[::-1][:n_logits]  # rows with tau_bin >= k
    events = np.bincount(tau_bin[observed], minlength=n_logits + 1)[:n_logits]
    return [float(e / r) if r else 0.5 for e, r in zip(events, at_risk)]


def hazards(logits: torch.Tensor) -> torch.Tensor:
    """Per-bin hazards h_k: (B, K-1) -> (B, K-1)."""
    return torch.sigmoid(logits)


def survival_at_edges(logits: torch.Tensor) -> torch.Tensor:
    """S_k = prod_{j<=k} (1 - h_j) = P(tau > edges[k]): (B, K-1) -> (B, K-1)."""
    # sigmoid(-x) = 1 - sigmoid(x) without cancellation
    return torch.exp(torch.cumsum(nn.functional.logsigmoid(-logits), dim=-1))


def p_churn(logits: torch.Tensor) -> torch.Tensor:
    """Probability of no activity in (C, C+H], h_0: (B, K-1) -> (B,)."""
    return torch.sigmoid(logits[..., 0])


def _edges(logits: torch.Tensor, edges: Sequence[float] | torch.Tensor) -> torch.Tensor:
    e = torch.as_tensor(edges, dtype=logits.dtype, device=logits.device).flatten()
    if e.numel() != logits.shape[-1]:
        raise ValueError(
            f"need one finite edge per logit: {e.numel()} edges for {logits.shape[-1]} logits"
        )
    if e[0] != 0 or (e.numel() > 1 and not bool((e[1:] > e[:-1]).all())):
        raise ValueError(f"edges must start at 0 and increase strictly, got {e.tolist()}")
    return e


def survival_curve(
    logits: torch.Tensor,
    edges: Sequence[float] | torch.Tensor,
    days: Sequence[float] | torch.Tensor,
) -> torch.Tensor:
    """P(tau > d), linear inside each bin, NaN past edges[-1]: (B, K-1), (D,) days -> (B, D)."""
    e = _edges(logits, edges)
    d = torch.as_tensor(days, dtype=logits.dtype, device=logits.device).flatten()
    s = survival_at_edges(logits)  # (B, K-1)
    k = torch.searchsorted(e, d)  # bin whose (e[k-1], e[k]] holds d; k = 0 for d <= 0
    kc = k.clamp(max=e.numel() - 1)
    lo = (kc - 1).clamp(min=0)
    width = (e[kc] - e[lo]).clamp(min=torch.finfo(e.dtype).tiny)
    w = torch.where(kc > 0, (d - e[lo]) / width, torch.ones_like(d))  # (D,)
    out = s[:, lo] + (s[:, kc] - s[:, lo]) * w  # (B, D)
    out = torch.where(d < 0, torch.ones_like(out), out)  # tau >= 0
    return torch.where(k >= e.numel(), torch.full_like(out, float("nan")), out)


def tau_median(logits: torch.Tensor, edges: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Smallest d with P(tau > d) <= 0.5 (0 if h_0 >= 0.5, NaN if none): (B, K-1) -> (B,)."""
    e = _edges(logits, edges)
    s = survival_at_edges(logits)  # (B, K-1)
    below = s <= 0.5
    k = below.to(torch.int64).argmax(dim=-1)  # first bin whose upper edge reaches 0.5
    lo = (k - 1).clamp(min=0)
    s_lo, s_hi = s.gather(1, lo[:, None])[:, 0], s.gather(1, k[:, None])[:, 0]
    frac = ((s_lo - 0.5) / (s_lo - s_hi).clamp(min=torch.finfo(s.dtype).tiny)).clamp(0.0, 1.0)
    med = torch.where(k > 0, e[lo] + frac * (e[k] - e[lo]), torch.zeros_like(s_lo))
    return torch.where(below.any(dim=-1), med, torch.full_like(med, float("nan")))


def tau_restricted_mean(
    logits: torch.Tensor, edges: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """Integral of the piecewise-linear P(tau > d) over [0, edges[-1]]: (B, K-1) -> (B,)."""
    e = _edges(logits, edges)
    s = survival_at_edges(logits)
    # trapezoids are exact for a piecewise-linear curve; empty sum (0) when edges == [0]
    return ((s[:, 1:] + s[:, :-1]) / 2 * (e[1:] - e[:-1])).sum(dim=-1)
