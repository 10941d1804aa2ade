"""A toy encoder living outside the package: the 'add an encoder' recipe is this file plus
`model.encoder=toy_encoder.MeanPoolEncoder` on the command line, nothing else."""

from __future__ import annotations

import torch
from torch import nn

from seqchurn.data.sequences import EVENT_TYPE, MASK, NUMERIC
from seqchurn.models.common import EventInputEmbedding, InputSizes, UserFeatures


class MeanPoolEncoder(nn.Module):
    """Mean of the embedded events, concatenated with the user features."""

    def __init__(self, sizes: InputSizes, d_model: int = 8):
        super().__init__()
        self.events = EventInputEmbedding(sizes, d_model)
        self.user = UserFeatures(sizes)
        self.out_dim = d_model + self.user.out_dim

    def forward(self, batch: dict) -> torch.Tensor:
        mask = batch[MASK].unsqueeze(-1).float()
        x = self.events(batch[EVENT_TYPE], batch[NUMERIC]) * mask
        pooled = x.sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.cat([pooled, self.user(batch)], dim=-1)
