"""Train a churn model and report its test metrics.

    python scripts/train.py [model=logistic|lstm|transformer] [data=cdnow|synthetic|events] [seed=0]
    python scripts/train.py -m model=logistic,lstm seed=0,1
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from _cli import exit_on_bad_input
from seqchurn.data.sequences import Y
from seqchurn.metrics import log_loss, lift_at, oracle_ratio
from seqchurn.models.heads import p_churn
from seqchurn.retention.tiers import fit_tiers
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
        _fit_tiers(trainer.lightning_module, datamodule, cfg.retention.tiers, ckpt)
    objects = {"datamodule": datamodule, "model": trainer.lightning_module, "trainer": trainer, "best_ckpt": ckpt}
    return metrics, objects


@torch.no_grad()
def _fit_tiers(model, datamodule, tier_cfg, ckpt: str) -> None:
    """Risk tiers from the validation predictions of the best model, stored with it (DESIGN section 7).

    Validation snapshots lie inside the training window, so no test-period data sets a threshold.
    """
    model.eval()
    p, y = [], []
    for batch in datamodule.val_dataloader():
        batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        p.append(p_churn(model(batch)).cpu())
        y.append(batch[Y].cpu())
    tiers = fit_tiers(torch.cat(p).numpy(), torch.cat(y).numpy(), **tier_cfg)
    model.preprocessing = {**(model.preprocessing or {}), "tiers": tiers}
    log.info(
        "risk tiers on validation: %s; cost threshold %.3f",
        ", ".join(f"{t['name']} p>={t['min_p']:.3f} precision {t['precision']:.2f}" for t in tiers["tiers"]),
        tiers["cost_threshold"],
    )
    if ckpt and Path(ckpt).is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        state["preprocessing"] = model.preprocessing
        tmp = Path(ckpt).with_name(f".{Path(ckpt).name}.tmp-{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, ckpt)


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
