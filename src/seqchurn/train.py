"""train(cfg): the one place that turns a composed Hydra config into a fitted, tested model.

scripts/train.py wraps it with @hydra.main and benchmarks/run.py calls it with composed
configs; it is the only module of the package that reads Hydra or omegaconf.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from seqchurn.callbacks import Recalibration, RiskTiers, SurvivalCheck, gather_rows
from seqchurn.data.sequences import INDEX
from seqchurn.errors import DataError
from seqchurn.metrics import auroc, oracle_ratio, report_metrics
from seqchurn.models.heads import p_churn, survival_at_edges, tau_restricted_mean
from seqchurn.pretrain import pretraining_dataset

log = logging.getLogger(__name__)
# Written beside the checkpoints when fit ends normally; its absence marks an interrupted run.
COMPLETE = "fit_complete"


def instantiate(node, **kwargs):
    """hydra.utils.instantiate, with a DataError of the target raised as itself (exit 2)."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (DataError, TypeError)):
            raise DataError(str(cause).splitlines()[0]) from err
        raise


def instantiate_group(cfg: DictConfig | None) -> list:
    """Every `_target_` entry of a config group such as callbacks or logger."""
    nodes = (cfg or {}).values()
    return [instantiate(c) for c in nodes if c is not None and "_target_" in c]


def train(cfg: DictConfig) -> tuple[dict, dict]:
    """Fit on training snapshots, pick the best epoch on validation, score the test snapshot.

    Returns:
        (metrics, objects): the logged metrics as floats; objects holds the datamodule, model,
        trainer, best_ckpt and test_predictions (arrays index, p_churn, tau_mean, surv in the row
        order of datamodule.snapshots["test"]).
    """
    pl.seed_everything(cfg.seed, workers=True)
    pretrainer = instantiate(cfg.pretrain) if cfg.get("pretrain") else None
    if pretrainer is not None:
        pretrainer.check_encoder(cfg.model.encoder)
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    log.info("data:\n%s", datamodule.describe())
    # recorded in the hyper-parameters, so a checkpoint tells that its encoder was pretrained
    extra = {"pretrained": pretrainer.name} if pretrainer is not None else {}
    model = instantiate(
        cfg.model,
        bin_edges=datamodule.bin_edges,
        hazard_prior=datamodule.hazard_prior,
        **datamodule.sizes,
        **extra,
        _convert_="all",
    )
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    metrics: dict[str, float] = {}
    started = time.perf_counter()
    ckpt_path = _checkpoint_to_start_from(cfg, trainer)
    if cfg.get("train", True):
        _check_epochs(cfg.trainer)
        if pretrainer is not None and ckpt_path is None:  # a resumed run's weights have it
            metrics.update(_pretrain(pretrainer, model, datamodule, trainer, loggers))
            started = time.perf_counter()  # time/fit_s stays the fine-tuning's alone
        done = _completion_marker(trainer)
        if done is not None:
            done.unlink(missing_ok=True)
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        if done is not None and trainer.is_global_zero:
            done.write_text("fit completed\n")
        metrics["time/fit_s"] = time.perf_counter() - started
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    checkpoint = trainer.checkpoint_callback
    if getattr(checkpoint, "best_model_score", None) is not None and checkpoint.monitor:
        # A sweep optimizes the epoch it keeps, not the last one it ran.
        metrics[f"{checkpoint.monitor}_best"] = float(checkpoint.best_model_score)
    best = _best_checkpoint(trainer) or ckpt_path
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
        log.info(Recalibration.describe(trainer.lightning_module))  # the best checkpoint's
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


def _pretrain(pretrainer, model, datamodule, trainer: pl.Trainer, loggers: list) -> dict:
    """Self-supervised pretraining of the model's encoder in place (pretrain.py), timed."""
    started = time.perf_counter()
    dataset = pretraining_dataset(datamodule)
    device = getattr(trainer.strategy, "root_device", torch.device("cpu"))

    def on_epoch(epoch: int, loss: float) -> None:
        for lg in loggers:
            lg.log_metrics({"pretrain/loss": loss}, step=epoch)

    losses = pretrainer.fit(model.encoder, dataset, device=device, on_epoch=on_epoch)
    return {"pretrain/loss": losses[-1], "time/pretrain_s": time.perf_counter() - started}


def _completion_marker(trainer: pl.Trainer) -> Path | None:
    callback = trainer.checkpoint_callback
    folder = getattr(callback, "dirpath", None) if callback else None
    return Path(folder) / COMPLETE if folder else None


def _checkpoint_to_start_from(cfg: DictConfig, trainer: pl.Trainer) -> str | None:
    """`ckpt_path` as given; `last` or an interrupted run in the same folder -> its last.ckpt.

    A run folder whose checkpoints lack the completion marker was interrupted: re-running
    train there resumes from last.ckpt instead of starting over beside a stale best.ckpt.
    """
    ckpt = cfg.get("ckpt_path")
    done = _completion_marker(trainer)
    last = done.parent / "last.ckpt" if done is not None else None
    if ckpt == "last":
        if last is None or not last.is_file():
            raise DataError(
                f"ckpt_path=last: there is no last.ckpt in {last.parent if last else 'the run'}"
            )
        return str(last)
    if ckpt is None and cfg.get("train", True) and last is not None and last.is_file():
        if not done.exists():
            log.info("resuming the interrupted run from %s", last)
            return str(last)
    if ckpt is not None and not Path(ckpt).is_file():
        raise DataError(f"checkpoint not found: {ckpt}")
    return ckpt


def _check_epochs(trainer_cfg: DictConfig) -> None:
    epochs = trainer_cfg.get("max_epochs")
    if trainer_cfg.get("fast_dev_run"):
        return
    if epochs is not None and (not isinstance(epochs, int) or epochs == 0 or epochs < -1):
        raise DataError(
            f"trainer.max_epochs must be a positive integer (or -1 for no limit), got {epochs!r}"
        )


def _best_checkpoint(trainer: pl.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    return (getattr(callback, "best_model_path", "") or None) if callback else None


def test_predictions(trainer: pl.Trainer, model, datamodule, ckpt: str | None) -> dict:
    """p_churn, tau_mean and P(tau > edge) of the test snapshots, across ranks, in row order."""
    outputs = trainer.predict(
        model, dataloaders=datamodule.test_dataloader(), ckpt_path=ckpt, return_predictions=True
    )
    rows = gather_rows(outputs or [])
    if not rows:
        raise DataError("no test prediction was made (is the test snapshot empty?)")
    logits = trainer.lightning_module.calibrate(torch.as_tensor(rows["logits"]))
    edges = list(trainer.lightning_module.hparams.bin_edges)
    return {
        INDEX: rows[INDEX],
        "p_churn": p_churn(logits).numpy().astype(np.float64),
        "tau_mean": tau_restricted_mean(logits, edges).numpy().astype(np.float64),
        "surv": survival_at_edges(logits).numpy().astype(np.float64),  # (N, K-1) at the edges
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
