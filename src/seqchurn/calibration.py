"""Post-hoc recalibration of the hazard logits at the period being scored.

Training stacks snapshots from many cutoffs, whose churn rates differ, so the model's
probabilities match the mix, not the period it scores. A temperature and an intercept shared
by every hazard bin, z' = z / T + b, are fitted by the hazard likelihood on the validation
users of the latest training cutoff (the labels closest to the test period; none from it)
and kept only when a 2-fold cross-fit there shows a held-out gain beyond noise. One monotone
map on every bin keeps each user's time-to-churn distribution a distribution and leaves the
ranking of users (AUROC, C-index) unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from seqchurn.losses import hazard_nll

IDENTITY = {"temperature": 1.0, "intercept": 0.0}
MAX_TEMPERATURE = 4.0


def apply_calibration(logits: torch.Tensor, calibration: dict | None) -> torch.Tensor:
    """(B, K-1) hazard logits mapped by the fitted temperature and intercept (None: as is)."""
    if not calibration or not calibration.get("kept"):
        return logits
    return logits / calibration["temperature"] + calibration["intercept"]


def fit_affine(logits: torch.Tensor, tau_bin: torch.Tensor, observed: torch.Tensor) -> dict:
    """Temperature and intercept minimizing the mean hazard NLL of these rows (L-BFGS).

    The temperature stays within [1/MAX_TEMPERATURE, MAX_TEMPERATURE]: a weak model on a
    small validation set would otherwise be flattened towards one p for everybody, which
    loses the ranking the tiers and the plan act on.
    """
    z = logits.detach().double()
    params = torch.zeros(2, dtype=torch.float64, requires_grad=True)  # u, b

    def inverse_temperature(u: torch.Tensor) -> torch.Tensor:
        return torch.exp(np.log(MAX_TEMPERATURE) * torch.tanh(u))

    opt = torch.optim.LBFGS([params], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = hazard_nll(z * inverse_temperature(params[0]) + params[1], tau_bin, observed)
        loss.backward()
        return loss

    opt.step(closure)
    inv_t, b = float(inverse_temperature(params[0].detach())), float(params[1].detach())
    return {"temperature": 1.0 / inv_t, "intercept": b}


def _mapped(logits: torch.Tensor, calibration: dict) -> torch.Tensor:
    """The logits under `calibration`'s temperature and intercept, kept or not, in float64."""
    return logits.double() / calibration["temperature"] + calibration["intercept"]


def _row_losses(logits, tau_bin, observed, calibration: dict) -> torch.Tensor:
    return hazard_nll(_mapped(logits, calibration), tau_bin, observed, reduction="none").detach()


def fit_calibration(
    logits: torch.Tensor,
    tau_bin: torch.Tensor,
    observed: torch.Tensor,
    y: torch.Tensor,
    seed: int = 0,
    min_rows: int = 200,
    z_keep: float = 2.0,
) -> dict:
    """The recalibration of the hazard logits, kept only when a 2-fold cross-fit supports it.

    Each half is scored by the map fitted on the other half. The map (refitted on all rows)
    is kept when the per-row held-out loss gain over the uncalibrated logits exceeds
    `z_keep` standard errors: a gain within noise is not worth moving every probability.
    With fewer than `min_rows` rows, or rows of one class only, nothing is fitted.

    Returns:
        {"temperature", "intercept", "kept", "rows", "loss_before", "loss_heldout", "gain_z",
        "calib_large_before", "calib_large_after"}: the last two are these rows' mean p_churn
        minus their churn rate before and after the map (equal when it is not kept).
    """
    n = len(logits)
    out = {**IDENTITY, "kept": False, "rows": n, "loss_before": float("nan")}
    out.update(loss_heldout=float("nan"), gain_z=float("nan"))
    out["calib_large_before"] = out["calib_large_after"] = _calib_large(logits, y, IDENTITY)
    if n < min_rows or len(torch.unique(y)) < 2:
        return out
    order = torch.as_tensor(np.random.default_rng(seed).permutation(n))
    folds = (order[: n // 2], order[n // 2 :])
    heldout = torch.empty(n, dtype=torch.float64)
    for fit_rows, eval_rows in (folds, folds[::-1]):
        fitted = fit_affine(logits[fit_rows], tau_bin[fit_rows], observed[fit_rows])
        heldout[eval_rows] = _row_losses(
            logits[eval_rows], tau_bin[eval_rows], observed[eval_rows], fitted
        )
    before = _row_losses(logits, tau_bin, observed, IDENTITY)
    gain = before - heldout
    se = float(gain.std()) / float(np.sqrt(n))
    out.update(loss_before=float(before.mean()), loss_heldout=float(heldout.mean()))
    # plain floats only: checkpoints must load with torch.load(weights_only=True)
    out["gain_z"] = float(gain.mean()) / se if se > 0 else 0.0
    if out["gain_z"] > z_keep:
        out.update(fit_affine(logits, tau_bin, observed), kept=True)
        out["calib_large_after"] = _calib_large(logits, y, out)
    return out


def _calib_large(logits, y, calibration: dict) -> float:
    """Mean p_churn minus churn rate of these rows under `calibration` (NaN without rows)."""
    if len(logits) == 0:
        return float("nan")
    return float(torch.sigmoid(_mapped(logits[:, 0], calibration)).mean() - y.double().mean())
