"""train(cfg): the one place that turns a composed Hydra config into a fitted, tested model.

scripts/train.py wraps it with @hydra.main and benchmarks/run.py calls it with composed
configs; it is the only module of the package that reads Hydra or omegaconf.
"""

from __future__ import annotations

import logging
import time

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from seqchurn.callbacks import RiskTiers, SurvivalCheck, gather_rows
from seqchurn.data.sequences import INDEX
from seqchurn.errors import DataError
from seqchurn.metrics import auroc, oracle_ratio, report_metrics
from seqchurn.models.heads import p_churn, tau_restricted_mean

log = logging.getLogger(__name__)


def instantiate_group(cfg: DictConfig | None) -> list:
    """Every `_target_` entry of a config group such as callbacks or logger."""
    nodes = (cfg or {}).values()
    return [hydra.utils.instantiate(c) for c in nodes if c is not None and "_target_" in c]


def train(cfg: DictConfig) -> tuple[dict, dict]:
    """Fit on training snapshots, pick the best epoch on validation, score the test snapshot.

    Returns:
        (metrics, objects): the logged metrics as floats; objects holds the datamodule, model,
        trainer, best_ckpt and test_predictions (arrays index, p_churn, tau_mean in the row
        order of datamodule.snapshots["test"]).
    """
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    log.info("data:\n%s", datamodule.describe())
    model = hydra.utils.instantiate(
        cfg.model, bin_edges=datamodule.bin_edges, **datamodule.sizes, _convert_="all"
    )
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False
    )
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    metrics: dict[str, float] = {}
    started = time.perf_counter()
    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics["time/fit_s"] = time.perf_counter() - started
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    best = _best_checkpoint(trainer) or cfg.get("ckpt_path")
    for cb in callbacks:
        if isinstance(cb, RiskTiers):
            log.info(cb.describe())
    if any(isinstance(cb, SurvivalCheck) for cb in callbacks):
        trainer.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False)
        for cb in callbacks:
            if isinstance(cb, SurvivalCheck):
                metrics.update(cb.summary)
    predictions = None
    if cfg.get("test", True):
        started = time.perf_counter()
        predictions = test_predictions(trainer, model, datamodule, best)
        metrics.update(_test_metrics(predictions, datamodule))
        metrics["time/test_s"] = time.perf_counter() - started
    for lg in loggers:
        lg.log_metrics({k: v for k, v in metrics.items() if not k.startswith("time/")})
        lg.finalize("success")
    objects = {
        "datamodule": datamodule,
        "model": trainer.lightning_module,
        "trainer": trainer,
        "best_ckpt": best or "",
        "test_predictions": predictions,
    }
    return metrics, objects


def _best_checkpoint(trainer: pl.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    return (getattr(callback, "best_model_path", "") or None) if callback else None


def test_predictions(trainer: pl.Trainer, model, datamodule, ckpt: str | None) -> dict:
    """p_churn and tau_mean of the test snapshots, gathered across ranks, in row order."""
    outputs = trainer.predict(
        model, dataloaders=datamodule.test_dataloader(), ckpt_path=ckpt, return_predictions=True
    )
    rows = gather_rows(outputs or [])
    if not rows:
        raise DataError("no test prediction was made (is the test snapshot empty?)")
    logits = torch.as_tensor(rows["logits"])
    edges = list(trainer.lightning_module.hparams.bin_edges)
    return {
        INDEX: rows[INDEX],
        "p_churn": p_churn(logits).numpy().astype(np.float64),
        "tau_mean": tau_restricted_mean(logits, edges).numpy().astype(np.float64),
        "has_time": len(edges) > 1,
    }


def _test_metrics(pred: dict, datamodule) -> dict[str, float]:
    """The report metrics of metrics.py on the test rows scored (all, or fewer in a dev run)."""
    test = datamodule.snapshots["test"].iloc[pred[INDEX]]
    y = test["y"].to_numpy()
    later = pred["tau_mean"] if pred["has_time"] else None
    scores = report_metrics(
        y, pred["p_churn"], test["tau"].to_numpy(), test["observed"].to_numpy(), later
    )
    out = {f"test/{k}": v for k, v in scores.items()}
    if datamodule.oracle is not None:
        oracle_auc = auroc(datamodule.oracle["p_churn_oracle"].to_numpy()[pred[INDEX]], y)
        out["test/auroc_oracle"] = oracle_auc
        out["test/oracle_ratio"] = oracle_ratio(out["test/auroc"], oracle_auc)
    return out
