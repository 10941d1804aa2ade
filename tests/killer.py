"""A callback that SIGKILLs its own training process, to test resuming (tests/test_resume.py)."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class KillAtEpoch(pl.Callback):
    """SIGKILL at the start of `epoch`, after the previous epoch's last.ckpt was written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)
