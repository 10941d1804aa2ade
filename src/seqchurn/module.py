"""ChurnModule: encoder + hazard head + loss + metrics + optimizer, one LightningModule for every model."""

from __future__ import annotations

from typing import Sequence

import pytorch_lightning as pl
import torch

from seqchurn.calibration import apply_calibration
from seqchurn.data.sequences import CUTOFF, INDEX, OBSERVED, TAU, TAU_BIN, Y
from seqchurn.losses import hazard_nll
from seqchurn.metrics import churn_metrics
from seqchurn.models import build_encoder
from seqchurn.models.common import InputSizes
from seqchurn.models.heads import HazardHead


class ChurnModule(pl.LightningModule):
    """A sequence (or summary) encoder with the discrete-time hazard head of DESIGN section 5.

    Args:
        encoder: registry name, "logistic" | "lstm" | "transformer".
        encoder_kwargs: chosen sizes of the encoder (widths, layers, dropout).
        bin_edges: finite upper edges of the tau bins after merging; K = len(bin_edges) + 1.
        n_event_types, n_numeric, n_summary, static_cardinalities: sizes learned from the data.
        loss_lambda: weight of the time-to-churn terms (bins >= 1); 0 gives a plain classifier.
        pretrained: the self-supervised pretraining the encoder started from ("coles",
            pretrain.py), recorded for readers of the checkpoint; None = none.
        hazard_prior: (K-1) pooled training hazards the head's bias starts from
            (heads.pooled_hazards); None = a zero bias.
    """

    def __init__(
        self,
        encoder: str,
        bin_edges: Sequence[int],
        n_event_types: int,
        n_numeric: int,
        n_summary: int,
        static_cardinalities: Sequence[int] = (),
        encoder_kwargs: dict | None = None,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        loss_lambda: float = 1.0,
        pos_weight: float | None = None,
        focal_gamma: float = 0.0,
        pretrained: str | None = None,
        hazard_prior: Sequence[float] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        sizes = InputSizes(n_event_types, n_numeric, n_summary, tuple(static_cardinalities))
        self.encoder = build_encoder(encoder, sizes, **dict(encoder_kwargs or {}))
        self.head = HazardHead(self.encoder.out_dim, len(bin_edges) + 1)
        if hazard_prior is not None:
            self.head.init_bias(hazard_prior)
        metrics = churn_metrics()
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.preprocessing: dict | None = None
        # fitted by callbacks.Recalibration at each validation end, saved in every checkpoint
        self.calibration: dict | None = None

    def forward(self, batch: dict) -> torch.Tensor:
        """Batch dict -> (B, K-1) hazard logits, before recalibration."""
        return self.head(self.encoder(batch))

    def calibrate(self, logits: torch.Tensor) -> torch.Tensor:
        """Hazard logits as scored: mapped by the recalibration fitted on validation, if any."""
        return apply_calibration(logits, self.calibration)

    def _shared_step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch)
        hp = self.hparams
        loss = hazard_nll(
            logits,
            batch[TAU_BIN],
            batch[OBSERVED],
            lam=hp.loss_lambda,
            pos_weight=hp.pos_weight,
            focal_gamma=hp.focal_gamma,
        )
        p_churn = torch.sigmoid(logits[:, 0])
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(p_churn.detach(), batch[Y].long())
        size = len(p_churn)
        self.log(
            f"{stage}/loss",
            loss,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=True,
            batch_size=size,
            # Under DDP each rank sees its own rows; the epoch's validation loss is their mean.
            sync_dist=stage != "train",
        )
        self.log_dict(
            metrics, on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=size
        )
        return loss, logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")[0]

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        _, logits = self._shared_step(batch, "val")
        # Callbacks (risk tiers, the survival check) read the validation predictions from here.
        return {
            "logits": logits.detach(),
            **{k: batch[k] for k in (INDEX, Y, CUTOFF, TAU, TAU_BIN, OBSERVED)},
        }

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        return {INDEX: batch[INDEX], "logits": self(batch)}

    def configure_optimizers(self):
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CALIBRATION_KEY] = self.calibration

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # The datamodule and the callbacks wrote what prediction needs besides the weights.
        self.preprocessing = checkpoint_preprocessing(checkpoint)
        self.calibration = checkpoint.get(CALIBRATION_KEY)


# Lightning stores LightningDataModule.state_dict() under the datamodule's class name.
DATAMODULE_KEY = "ChurnDataModule"
PREPROCESSING_KEY = "preprocessing"  # in ChurnDataModule.state_dict()
TIERS_KEY = "tiers"  # written by callbacks.RiskTiers
CALIBRATION_KEY = "calibration"  # ChurnModule.calibration, fitted by callbacks.Recalibration


def checkpoint_preprocessing(checkpoint: dict) -> dict | None:
    """The preprocessing state of a checkpoint, with the risk tiers fitted at validation."""
    datamodule = checkpoint.get(DATAMODULE_KEY) or {}
    state = datamodule.get(PREPROCESSING_KEY)
    if state is None:
        return None
    return {**state, TIERS_KEY: checkpoint.get(TIERS_KEY)}
