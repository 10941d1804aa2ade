"""Callbacks that learn from the validation predictions: risk tiers, the time-to-churn check.

What needs the model's validation predictions is fitted at every validation end, so each
checkpoint Lightning writes (best.ckpt included) carries the tiers of its own weights and
nothing is rewritten after training.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

from seqchurn.calibration import fit_calibration
from seqchurn.data.sequences import CUTOFF, INDEX, OBSERVED, TAU, TAU_BIN, Y
from seqchurn.io import atomic_write
from seqchurn.models.heads import p_churn, survival_at_edges, tau_restricted_mean
from seqchurn.module import TIERS_KEY
from seqchurn.retention.tiers import fit_tiers
from seqchurn.survival_check import plot_survival_check, survival_check

log = logging.getLogger(__name__)


def gather_rows(parts: list[dict]) -> dict[str, np.ndarray]:
    """Per-batch dicts of tensors -> arrays of every rank's rows, in snapshot-row (INDEX) order."""
    local = {k: torch.cat([p[k].detach().cpu() for p in parts]) for k in parts[0]} if parts else {}
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Ranks hold different numbers of rows (length-bucketed batches): gather objects.
        every = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(every, local)
        every = [e for e in every if e]
        local = {k: torch.cat([e[k] for e in every]) for k in every[0]} if every else {}
    if not local:
        return {}
    order = torch.argsort(local[INDEX])
    return {k: v[order].numpy() for k, v in local.items()}


class _ValidationRows(pl.Callback):
    """Collects the rows `ChurnModule.validation_step` returns over one validation epoch."""

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._parts: list[dict] = []

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        if outputs is not None:
            self._parts.append(outputs)

    def rows(self) -> dict[str, np.ndarray]:
        return gather_rows(self._parts)

    def fitting_rows(self, trainer) -> dict[str, np.ndarray] | None:
        """This epoch's rows while fitting (not in the sanity check, not in validate)."""
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return None
        return self.rows() or None


class Recalibration(_ValidationRows):
    """Fits the recalibration of the hazard logits (calibration.py) at each validation end.

    Fitted on the validation rows of the latest training cutoff, the period closest to the
    one scored; stored on the module (and so in every checkpoint) before the risk tiers,
    which are fitted on the recalibrated p, read it. List it before RiskTiers.

    Args:
        min_rows: fewer validation rows at the latest cutoff than this fit nothing.
        z_keep: the map is kept when its cross-fitted loss gain exceeds this many standard errors.
        seed: the 2-fold split of the cross-fit that decides whether to keep the map.
    """

    def __init__(self, min_rows: int = 200, z_keep: float = 2.0, seed: int = 0):
        self.min_rows, self.z_keep, self.seed = min_rows, z_keep, seed

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        rows = self.fitting_rows(trainer)
        if rows is None:
            return
        latest = rows[CUTOFF] == rows[CUTOFF].max()
        pl_module.calibration = fit_calibration(
            torch.as_tensor(rows["logits"][latest]),
            torch.as_tensor(rows[TAU_BIN][latest]),
            torch.as_tensor(rows[OBSERVED][latest]).bool(),
            torch.as_tensor(rows[Y][latest]),
            seed=self.seed,
            min_rows=self.min_rows,
            z_keep=self.z_keep,
        )

    @staticmethod
    def describe(pl_module) -> str:
        """The recalibration `pl_module` holds (after a checkpoint load: that checkpoint's)."""
        cal = pl_module.calibration
        if not cal:
            return "no recalibration fitted"
        verdict = "kept" if cal["kept"] else "not kept"
        return (
            f"recalibration on {cal['rows']} validation rows of the latest training cutoff: "
            f"temperature {cal['temperature']:.3f}, intercept {cal['intercept']:+.3f}, {verdict} "
            f"(hazard NLL {cal['loss_before']:.4f} -> {cal['loss_heldout']:.4f} held out, "
            f"gain {cal['gain_z']:.1f} standard errors); mean p - churn rate there "
            f"{cal.get('calib_large_after', float('nan')):+.4f}"
        )


class RiskTiers(_ValidationRows):
    """Fits the risk tiers (DESIGN section 7) on the (recalibrated) validation predictions.

    Args:
        tiers: keyword arguments of `retention.tiers.fit_tiers` (conf/retention/default.yaml).
    """

    def __init__(self, tiers: Mapping):
        self.tiers_kwargs = dict(tiers)
        self.tiers: dict | None = None

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        rows = self.fitting_rows(trainer)
        if rows is None:
            return
        p = p_churn(pl_module.calibrate(torch.as_tensor(rows["logits"]))).numpy()
        self.tiers = fit_tiers(p, rows[Y].astype(np.int64), **self.tiers_kwargs)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[TIERS_KEY] = self.tiers

    def describe(self) -> str:
        if not self.tiers:
            return "no risk tiers fitted"
        tiers = ", ".join(
            f"{t['name']} p>={t['min_p']:.3f} precision {t['precision']:.2f}"
            for t in self.tiers["tiers"]
        )
        return (
            f"risk tiers on validation: {tiers}; cost threshold {self.tiers['cost_threshold']:.3f}"
        )


class SurvivalCheck(_ValidationRows):
    """Predicted time to churn vs Kaplan-Meier on the validation snapshots of the best model.

    Runs on `trainer.validate(...)` (not during fitting) and writes survival_check.csv and
    .png into `output_dir`; the summary is logged as val/km_share_inside and
    val/cindex_tau_mean.
    """

    def __init__(self, output_dir: str):
        self.output_dir = Path(output_dir)
        self.summary: dict = {}

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        edges = list(pl_module.hparams.bin_edges)
        if trainer.state.fn != TrainerFn.VALIDATING or len(edges) < 2:
            return
        rows = self.rows()
        if not rows or not trainer.is_global_zero:
            return
        logits = pl_module.calibrate(torch.as_tensor(rows["logits"]))
        snaps = pd.DataFrame({"cutoff": rows[CUTOFF], "tau": rows[TAU], "observed": rows[OBSERVED]})
        table, summary = survival_check(
            survival_at_edges(logits).numpy(),
            tau_restricted_mean(logits, edges).numpy(),
            p_churn(logits).numpy(),
            snaps,
            edges,
            int(trainer.datamodule.test_cutoff),
            int(trainer.datamodule.hparams.horizon_days),
        )
        self.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(
            self.output_dir / "survival_check.csv", lambda tmp: table.to_csv(tmp, index=False)
        )
        plot_survival_check(table, self.output_dir / "survival_check.png")
        self.summary = {
            "val/km_share_inside": summary["share_inside"],
            "val/cindex_tau_mean": summary["cindex_tau_mean"],
        }
        log.info(
            "time to churn on validation: %.0f%% of decile x edge points inside the Kaplan-Meier "
            "band; C-index of tau_mean %.4f",
            100 * self.summary["val/km_share_inside"],
            self.summary["val/cindex_tau_mean"],
        )


class RngState(pl.Callback):
    """Saves the random generators' states in every checkpoint and restores them on resume.

    Dropout draws from the global torch generator; with its state restored, a run resumed
    from last.ckpt continues exactly as the uninterrupted run would have (on CPU).
    """

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        # Tensors and plain tuples only, so the checkpoint still loads with weights_only=True.
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "python": random.getstate(),
        }

    def __init__(self) -> None:
        self._restore: dict | None = None

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # Applied when training resumes: the sanity check and loader set-up between loading
        # and the first batch draw from the generators, which the saved run did not do there.
        self._restore = checkpoint.get("rng_states")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # Lightning sets the sampler's epoch from a progress counter that a checkpoint saved
        # at validation end restores one short; the epoch number itself is unambiguous.
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(trainer.current_epoch)
        states, self._restore = self._restore, None
        if states:
            torch.set_rng_state(states["torch"])
            kind, keys, pos, has_gauss, gauss = states["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
            random.setstate(states["python"])
