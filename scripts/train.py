"""Train a churn model and report its test metrics.

    python scripts/train.py [model=logistic|lstm|transformer] [data=cdnow|synthetic|events] [seed=0]
    python scripts/train.py -m model=logistic,lstm seed=0,1
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from _cli import exit_on_bad_input
from seqchurn.data.sequences import INDEX
from seqchurn.io import atomic_write
from seqchurn.metrics import log_loss, lift_at, oracle_ratio
from seqchurn.models.heads import p_churn, survival_at_edges, tau_restricted_mean
from seqchurn.retention.tiers import fit_tiers
from seqchurn.survival_check import plot_survival_check, survival_check
from sklearn.metrics import roc_auc_score

log = logging.getLogger("seqchurn.train")


def _instantiate_dict(cfg: DictConfig | None) -> list:
    return [hydra.utils.instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]


def train(cfg: DictConfig) -> tuple[dict, dict]:
    """Fit on training snapshots, pick the best epoch on validation, score the test snapshot.

    Returns:
        (metrics, objects): the logged metrics as floats, and the datamodule, model and trainer.
    """
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    log.info("data:\n%s", datamodule.describe())
    model = hydra.utils.instantiate(cfg.model, bin_edges=datamodule.bin_edges, **datamodule.sizes, _convert_="all")
    model.preprocessing = datamodule.preprocessing_state()
    callbacks = _instantiate_dict(cfg.get("callbacks"))
    loggers = _instantiate_dict(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    started = time.perf_counter()
    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - started
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
    if cfg.get("test", True):
        started = time.perf_counter()
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt or None, verbose=False)
        metrics["time/test_s"] = time.perf_counter() - started
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        metrics.update(_report_metrics(trainer.lightning_module, datamodule))
    metrics["time/fit_s"] = fit_seconds
    if cfg.get("retention") is not None and cfg.get("train", True):
        metrics.update(_after_fit(trainer.lightning_module, datamodule, cfg, ckpt))
    objects = {"datamodule": datamodule, "model": trainer.lightning_module, "trainer": trainer, "best_ckpt": ckpt}
    return metrics, objects


@torch.no_grad()
def _validation_logits(model, datamodule) -> np.ndarray:
    """Hazard logits of the best model for the validation snapshots, in their row order."""
    model.eval()
    logits, index = [], []
    for batch in datamodule.val_dataloader():
        batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        logits.append(model(batch).float().cpu())
        index.append(batch[INDEX].cpu())
    order = torch.argsort(torch.cat(index))
    return torch.cat(logits)[order]


def _after_fit(model, datamodule, cfg: DictConfig, ckpt: str) -> dict:
    """Tiers and the time-to-churn check from validation snapshots, inside the training window.

    The tiers (DESIGN section 7) go into the checkpoint, so predict needs nothing else; the
    check writes survival_check.csv/.png next to the checkpoints.
    """
    state = torch.load(ckpt, map_location="cpu", weights_only=False) if ckpt and Path(ckpt).is_file() else None
    if state is not None:  # the best epoch, also when test=false left the last one loaded
        model.load_state_dict(state["state_dict"])
    logits = _validation_logits(model, datamodule)
    val = datamodule.snapshots["val"]
    p = p_churn(logits).numpy()
    tiers = fit_tiers(p, val["y"].to_numpy(), **cfg.retention.tiers)
    model.preprocessing = {**(model.preprocessing or {}), "tiers": tiers}
    log.info(
        "risk tiers on validation: %s; cost threshold %.3f",
        ", ".join(f"{t['name']} p>={t['min_p']:.3f} precision {t['precision']:.2f}" for t in tiers["tiers"]),
        tiers["cost_threshold"],
    )
    if state is not None:
        state["preprocessing"] = model.preprocessing
        atomic_write(ckpt, lambda tmp: torch.save(state, tmp))

    edges = datamodule.bin_edges
    if len(edges) < 2:
        return {}
    surv = survival_at_edges(logits).numpy()
    tau_mean = tau_restricted_mean(logits, edges).numpy()
    table, summary = survival_check(surv, tau_mean, p, val, edges, datamodule.test_cutoff, datamodule.hparams.horizon_days)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "survival_check.csv", index=False)
    plot_survival_check(table, out_dir / "survival_check.png")
    out = {"val/km_share_inside": summary["share_inside"], "val/cindex_tau_mean": summary["cindex_tau_mean"]}
    log.info("time to churn on validation: %.0f%% of decile x edge points inside the Kaplan-Meier band; "
             "C-index of tau_mean %.4f", 100 * out["val/km_share_inside"], out["val/cindex_tau_mean"])
    for lg in model.loggers:
        lg.log_metrics(out)
    return out


def _report_metrics(model, datamodule) -> dict:
    """Test metrics that are not torchmetrics: log loss, lift at the top decile, the oracle ratio."""
    pred = getattr(model, "test_predictions", None)
    if pred is None:
        return {}
    rows = pred["index"]  # all test rows, or fewer in a fast_dev_run
    y = datamodule.snapshots["test"]["y"].to_numpy()[rows]
    p = pred["p_churn"]
    out = {"test/log_loss": log_loss(p, y), "test/lift_top10": lift_at(p, y, 0.1)}
    if datamodule.oracle is not None:
        oracle_auc = roc_auc_score(y, datamodule.oracle["p_churn_oracle"].to_numpy()[rows])
        out["test/auroc_oracle"] = float(oracle_auc)
        out["test/oracle_ratio"] = oracle_ratio(roc_auc_score(y, p), oracle_auc)
    for lg in model.loggers:
        lg.log_metrics(out)
    return out


def _print_summary(metrics: dict, ckpt: str) -> None:
    if ckpt:
        print(f"best checkpoint: {ckpt}")
    shown = [k for k in sorted(metrics) if k.startswith("test/")]
    print("  ".join(f"{k}={metrics[k]:.4f}" for k in shown))


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@exit_on_bad_input(lambda cfg: cfg.paths.output_dir)
def main(cfg: DictConfig) -> float | None:
    metrics, objects = train(cfg)
    _print_summary(metrics, objects["best_ckpt"])
    value = metrics.get(cfg.get("optimized_metric") or "")
    return None if value is None or np.isnan(value) else value


if __name__ == "__main__":
    main()
