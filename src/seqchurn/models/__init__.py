"""Encoders (batch -> (B, D) user vector), the hazard head, and a registry of encoders by name."""

from __future__ import annotations

from torch import nn

from seqchurn.models.heads import HazardHead
from seqchurn.models.logistic import LogisticEncoder
from seqchurn.models.lstm import LSTMEncoder
from seqchurn.models.transformer import TransformerEncoder

ENCODERS: dict[str, type[nn.Module]] = {
    "logistic": LogisticEncoder,
    "lstm": LSTMEncoder,
    "transformer": TransformerEncoder,
}


def build_encoder(name: str, **kwargs) -> nn.Module:
    """Instantiate the encoder registered under `name` with its keyword arguments."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}")
    return ENCODERS[name](**kwargs)


__all__ = [
    "ENCODERS",
    "HazardHead",
    "LSTMEncoder",
    "LogisticEncoder",
    "TransformerEncoder",
    "build_encoder",
]
