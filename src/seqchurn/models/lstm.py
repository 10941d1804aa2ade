"""LSTM over packed event sequences, last state concatenated with user features."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from seqchurn.data.sequences import EVENT_TYPE, MASK, NUMERIC
from seqchurn.models.common import EventInputEmbedding, InputSizes, UserFeatures


class LSTMEncoder(nn.Module):
    """Events -> packed LSTM -> top-layer last state ++ summary ++ static: batch -> (B, out_dim)."""

    def __init__(
        self,
        sizes: InputSizes,
        d_model: int = 64,
        hidden: int = 64,
        num_layers: int = 1,
        dropout: float = 0.1,
        use_summary: bool = True,
        static_dim: int = 4,
    ) -> None:
        super().__init__()
        self.embed = EventInputEmbedding(sizes, d_model, dropout=dropout)
        # nn.LSTM applies dropout only between layers and warns when there is one layer
        self.lstm = nn.LSTM(
            d_model,
            hidden,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.user = UserFeatures(sizes, static_dim, use_summary)
        self.dropout = nn.Dropout(dropout)
        self.sequence_dim = hidden
        self.out_dim = hidden + self.user.out_dim

    @property
    def embeddings(self) -> tuple[nn.Embedding | None, list[nn.Embedding]]:
        """(event-type embedding, static embeddings): the outputs explain/ attributes to."""
        return self.embed.type_emb, list(self.user.static.embs)

    def sequence(self, batch: dict) -> torch.Tensor:
        """Events only -> the top layer's last state: (B, sequence_dim).

        The part pretrain.py trains on slices: summary and static features stay out of it.
        """
        x = self.embed(batch[EVENT_TYPE], batch[NUMERIC].float())  # (B, T, d)
        lengths = batch[MASK].sum(dim=1).cpu()  # pack_padded_sequence wants lengths on CPU
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)  # h_n: (layers, B, hidden), already in the batch's order
        return h_n[-1]

    def forward(self, batch: dict) -> torch.Tensor:
        seq = self.dropout(self.sequence(batch))
        return torch.cat([seq, self.user(batch)], dim=-1)  # (B, out_dim)
