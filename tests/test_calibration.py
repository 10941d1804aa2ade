"""Recalibration of the hazard logits: fit, choice by cross-fit, and the one scoring path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.special import expit, logit

from conftest import predict_file
from seqchurn.calibration import apply_calibration, fit_calibration
from seqchurn.losses import hazard_nll


def _draw(n: int, shift: float, scale: float = 1.0, seed: int = 0):
    """Users whose true hazard logits are z; the model reports z * scale + shift."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 3, generator=gen) * 1.2 + torch.tensor([0.5, -1.0, -0.5])
    hazard = torch.sigmoid(z)
    u = torch.rand(n, 3, generator=gen)
    event = u < hazard  # the first bin whose hazard fires is the user's bin
    tau_bin = torch.where(event.any(1), event.float().argmax(1), torch.tensor(3))  # 3: open bin
    observed = torch.ones(n, dtype=torch.bool)
    y = (tau_bin == 0).float()
    return z * scale + shift, tau_bin, observed, y, z


def test_a_shifted_and_overconfident_model_is_mapped_back():
    reported, tau_bin, observed, y, true_z = _draw(6000, shift=0.8, scale=2.0)
    cal = fit_calibration(reported, tau_bin, observed, y)
    assert cal["kept"] and cal["loss_heldout"] < cal["loss_before"] and cal["gain_z"] > 2
    assert all(type(v) in (float, bool, int) for v in cal.values())  # weights_only loads
    assert abs(cal["temperature"] - 2.0) < 0.2 and abs(cal["intercept"] + 0.4) < 0.15
    p = torch.sigmoid(apply_calibration(reported, cal)[:, 0])
    assert abs(float(p.mean() - y.mean())) < 0.01
    assert abs(cal["calib_large_after"] - float(p.double().mean() - y.double().mean())) < 1e-6
    assert cal["calib_large_before"] > 0.1  # the shift the map took out
    fixed = hazard_nll(apply_calibration(reported, cal), tau_bin, observed)
    assert fixed < hazard_nll(reported, tau_bin, observed)
    # one monotone map: the ranking of users is untouched
    assert torch.equal(torch.argsort(p), torch.argsort(reported[:, 0]))


def test_a_calibrated_model_stays_nearly_as_it_is():
    reported, tau_bin, observed, y, _ = _draw(6000, shift=0.0, seed=1)
    cal = fit_calibration(reported, tau_bin, observed, y)
    if cal["kept"]:  # a held-out gain can only be noise here: the map stays near identity
        assert abs(cal["temperature"] - 1) < 0.1 and abs(cal["intercept"]) < 0.1
    out = apply_calibration(reported, cal)
    assert torch.allclose(out, reported, atol=0.2)


def test_too_few_rows_or_one_class_fit_nothing():
    reported, tau_bin, observed, y, _ = _draw(100, shift=1.0)
    assert not fit_calibration(reported, tau_bin, observed, y)["kept"]
    reported, tau_bin, observed, y, _ = _draw(1000, shift=1.0)
    ones = torch.ones_like(y)
    assert not fit_calibration(reported, torch.zeros_like(tau_bin), observed, ones)["kept"]
    assert torch.equal(apply_calibration(reported, None), reported)


def test_predict_applies_the_checkpoints_recalibration(scored, tmp_path):
    ckpt, log, _, _ = scored
    state = torch.load(ckpt, weights_only=False)
    for name, calibration in (
        ("plain", None),
        ("mapped", {"temperature": 2.0, "intercept": 0.5, "kept": True, "rows": 1}),
    ):
        torch.save({**state, "calibration": calibration}, tmp_path / f"{name}.ckpt")
        predict_file(tmp_path / f"{name}.ckpt", log, tmp_path / f"{name}.parquet")
    before = pd.read_parquet(tmp_path / "plain.parquet").set_index("user_id")
    after = pd.read_parquet(tmp_path / "mapped.parquet").set_index("user_id").loc[before.index]
    expected = expit(logit(before["p_churn"].to_numpy()) / 2.0 + 0.5)
    np.testing.assert_allclose(after["p_churn"].to_numpy(), expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(after["s_90"], before["s_90"])  # every bin goes through the map
