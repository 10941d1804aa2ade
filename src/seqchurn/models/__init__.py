"""Encoders (batch -> (B, D) user vector), the hazard head, and a registry of encoders by name.

An encoder is any `nn.Module` built from the data's sizes (`InputSizes`, its first argument)
plus its own keyword arguments, with an `out_dim` attribute. Name it in the model config by its registry name or by a dotted import path
(`model.encoder=mypkg.encoders.GRUEncoder`), so a new encoder needs no edit here.
An encoder with a sequence part also has `sequence(batch) -> (B, sequence_dim)`, the events-only
representation before user features join it: what `pretrain=coles` (pretrain.py) trains.
"""

from __future__ import annotations

import importlib

from torch import nn

from seqchurn.models.common import InputSizes
from seqchurn.models.heads import HazardHead
from seqchurn.models.logistic import LogisticEncoder
from seqchurn.models.lstm import LSTMEncoder
from seqchurn.models.transformer import TransformerEncoder

ENCODERS: dict[str, type[nn.Module]] = {
    "logistic": LogisticEncoder,
    "lstm": LSTMEncoder,
    "transformer": TransformerEncoder,
}


def encoder_class(name: str) -> type[nn.Module]:
    """The encoder class registered under `name`, or imported from the dotted path `name`."""
    if name in ENCODERS:
        return ENCODERS[name]
    module_name, _, attr = name.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr) if module_name else None
    except (ImportError, AttributeError):
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(
            f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)} "
            "or give the dotted path of an nn.Module class"
        )
    return cls


def build_encoder(name: str, sizes: InputSizes, **kwargs) -> nn.Module:
    """Instantiate the encoder `name` (registry name or dotted path) on the data's sizes."""
    encoder = encoder_class(name)(sizes, **kwargs)
    if not isinstance(getattr(encoder, "out_dim", None), int):
        raise ValueError(f"encoder {name!r} must set an integer attribute out_dim")
    return encoder


__all__ = [
    "ENCODERS",
    "HazardHead",
    "InputSizes",
    "LSTMEncoder",
    "LogisticEncoder",
    "TransformerEncoder",
    "build_encoder",
    "encoder_class",
]
