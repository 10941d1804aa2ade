"""Pre-norm Transformer over events with time-aware positions, pooled, ++ user features."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from seqchurn.data.feature_table import time_channel
from seqchurn.data.sequences import EVENT_TYPE, MASK, NUMERIC
from seqchurn.models.common import EventInputEmbedding, InputSizes, UserFeatures


class TimeEncoding(nn.Module):
    """Learned-frequency sinusoids of a continuous time value: (B, T) -> (B, T, d_model)."""

    def __init__(self, d_model: int, n_freq: int = 16, max_freq: float = 3.0) -> None:
        super().__init__()
        # geometric init spans slow trends to fine detail of the standardized log-days channel
        self.freq = nn.Parameter(torch.logspace(-1, math.log10(max_freq), n_freq))
        self.proj = nn.Linear(2 * n_freq + 1, d_model)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        a = t.unsqueeze(-1) * self.freq  # (B, T, n_freq)
        return self.proj(torch.cat([torch.sin(a), torch.cos(a), t.unsqueeze(-1)], dim=-1))


def sinusoidal_index(steps: torch.Tensor, d_model: int) -> torch.Tensor:
    """Fixed sinusoidal encoding of integer steps: (B, T) -> (B, T, d_model)."""
    half = d_model // 2
    inv = torch.exp(-math.log(10000.0) * torch.arange(half, device=steps.device) / max(half, 1))
    a = steps.unsqueeze(-1).float() * inv  # (B, T, half)
    enc = torch.cat([torch.sin(a), torch.cos(a)], dim=-1)
    return nn.functional.pad(enc, (0, d_model - 2 * half))


@contextlib.contextmanager
def _no_fastpath():
    """Encoder layers without PyTorch's inference "fast path", which on padded batches builds
    the full (B, heads, T, T) attention: 6 GB more peak memory at B=4096, T=206 and half the
    speed of the fused scaled_dot_product_attention kernel the regular path calls."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


class TransformerEncoder(nn.Module):
    """Events -> pre-norm Transformer -> masked mean or CLS ++ summary ++ static: (B, out_dim)."""

    def __init__(
        self,
        sizes: InputSizes,
        d_model: int = 64,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        pooling: str = "mean",
        use_summary: bool = True,
        static_dim: int = 4,
        index_position: bool = False,
        time_max_freq: float = 3.0,
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.time_channel = time_channel()
        if sizes.n_numeric <= self.time_channel:
            raise ValueError(
                f"n_numeric={sizes.n_numeric} lacks the time channel {self.time_channel}"
            )
        self.pooling, self.index_position, self.d_model = pooling, index_position, d_model
        self.embed = EventInputEmbedding(sizes, d_model)
        self.time = TimeEncoding(d_model, max_freq=time_max_freq)
        self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02) if pooling == "cls" else None
        self.input_dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, batch_first=True, norm_first=True
        )
        # Dropout on the attention weights sends scaled_dot_product_attention to its unfused
        # "math" kernel (about 30x slower on CPU at length 256, benchmarks/train.py); the
        # residual and feed-forward dropouts still regularize.
        layer.self_attn.dropout = attention_dropout
        # pre-norm needs a final norm; nested tensors are not supported with norm_first
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.user = UserFeatures(sizes, static_dim, use_summary)
        self.sequence_dim = d_model
        self.out_dim = d_model + self.user.out_dim

    @property
    def embeddings(self) -> tuple[nn.Embedding | None, list[nn.Embedding]]:
        """(event-type embedding, static embeddings): the outputs explain/ attributes to."""
        return self.embed.type_emb, list(self.user.static.embs)

    def sequence(self, batch: dict) -> torch.Tensor:
        """Events only -> the pooled encoding: (B, sequence_dim).

        The part pretrain.py trains on slices: summary and static features stay out of it.
        """
        mask, numeric = batch[MASK], batch[NUMERIC].float()
        x = self.embed(batch[EVENT_TYPE], numeric) + self.time(
            numeric[..., self.time_channel]
        )  # (B, T, d)
        if self.index_position:
            # steps back from the latest event, so the newest event always gets position 0
            steps = (
                mask.sum(1, keepdim=True) - 1 - torch.arange(mask.shape[1], device=mask.device)
            ).clamp(min=0)
            x = x + sinusoidal_index(steps, self.d_model)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+T, d)
            mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
        with _no_fastpath():
            h = self.encoder(self.input_dropout(x), src_key_padding_mask=~mask)  # (B, T', d)
        if self.cls is not None:
            pooled = h[:, 0]
        else:
            m = mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, d)
        return pooled

    def forward(self, batch: dict) -> torch.Tensor:
        return torch.cat([self.sequence(batch), self.user(batch)], dim=-1)  # (B, out_dim)
