"""Loss functions on tensors: the discrete-time logistic-hazard likelihood of DESIGN section 5,
and the contrastive InfoNCE of self-supervised pretraining (pretrain.py)."""

from __future__ import annotations

import torch
from torch.nn.functional import logsigmoid


def hazard_nll(
    logits: torch.Tensor,
    tau_bin: torch.Tensor,
    observed: torch.Tensor,
    lam: float = 1.0,
    pos_weight: float | torch.Tensor | None = None,
    focal_gamma: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Bin-0 BCE + lam x hazard terms of bins >= 1.

    Args:
        logits: (B, K-1) hazard logits, K bins with the last one open.
        tau_bin: (B,) long in [0, K-1]; the bin of an observed tau, or for a censored user
            the bin whose upper edge is the censoring day m.
        observed: (B,) bool; observed users take survival terms j < tau_bin and the event at
            tau_bin (none for the open bin K-1), censored users survival terms j <= tau_bin.
        lam: weight of the bins >= 1 (1 = full likelihood, 0 = plain classifier on bin 0).
        pos_weight: multiplies the bin-0 positive (churn) term, as in BCEWithLogitsLoss.
        focal_gamma: > 0 scales the bin-0 term by (1 - p_t) ** gamma.
        reduction: "mean" (sum / B), "sum" or "none".

    Returns:
        () for "mean"/"sum", (B,) for "none".
    """
    if logits.dim() != 2 or logits.shape[1] < 1:
        raise ValueError(f"logits must be (B, K-1) with K >= 2, got {tuple(logits.shape)}")
    n_users, n_logits = logits.shape
    if tau_bin.shape != (n_users,) or observed.shape != (n_users,):
        raise ValueError(
            f"tau_bin and observed must be ({n_users},) to match logits, got "
            f"{tuple(tau_bin.shape)} and {tuple(observed.shape)}; squeeze trailing dimensions"
        )
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if tau_bin.numel() and (int(tau_bin.min()) < 0 or int(tau_bin.max()) > n_logits):
        raise ValueError(
            f"tau_bin must lie in [0, {n_logits}] for {n_logits} logits (K = {n_logits + 1} bins)"
        )

    obs = observed.bool()[:, None]
    k = tau_bin.long()[:, None]
    j = torch.arange(n_logits, device=logits.device)[None, :]  # (1, K-1)
    surv = (j < k) | (~obs & (j == k))  # (B, K-1) bins survived
    event = obs & (j == k)  # never true for the open bin k = K-1
    log_h, log_1mh = logsigmoid(logits), logsigmoid(-logits)
    terms = -(event * log_h + surv * log_1mh)  # (B, K-1)

    # bin 0 always has exactly one term: BCE(h_0, y) with y = observed & tau_bin == 0
    pos = event[:, 0]
    bin0 = terms[:, 0]
    if pos_weight is not None:
        bin0 = torch.where(
            pos, bin0 * torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device), bin0
        )
    if focal_gamma > 0:
        p_t = torch.where(pos, log_h[:, 0], log_1mh[:, 0]).exp()
        bin0 = bin0 * (1 - p_t).pow(focal_gamma)
    loss = bin0 + lam * terms[:, 1:].sum(dim=1)  # (B,)

    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / max(n_users, 1)


def info_nce(z: torch.Tensor, groups: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE (NT-Xent) over views: each row's other views are positives, all rows candidates.

    Args:
        z: (N, D) embeddings of N views, cosine similarity is used (rows are normalized).
        groups: (N,) long, the user of each view; every user needs at least two views.
        temperature: divides the similarities; smaller sharpens the softmax.

    Returns:
        () the mean over ordered positive pairs (i, j) of -log softmax_{k != i}(s_ik / t)[j];
        with two views per user this is SimCLR's NT-Xent. Constant z gives log(N - 1).
    """
    if z.dim() != 2 or groups.shape != (z.shape[0],):
        raise ValueError(f"z must be (N, D) and groups (N,), got {tuple(z.shape)}, {groups.shape}")
    z = torch.nn.functional.normalize(z.float(), dim=1)
    own = torch.eye(len(z), dtype=torch.bool, device=z.device)
    # a view is never its own candidate: its similarity of 1 would dominate every softmax
    sim = (z @ z.T / temperature).masked_fill(own, float("-inf"))  # (N, N)
    positive = (groups[:, None] == groups[None, :]) & ~own
    if not positive.any(dim=1).all():
        raise ValueError("every user needs at least two views in the batch")
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    return -log_prob[positive].mean()
