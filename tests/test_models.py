"""Encoders: shapes, padding invariance, batch independence, gradients, registry."""

from __future__ import annotations

import pytest
import torch

from seqchurn.data.feature_table import SEQUENCE_CHANNELS
from seqchurn.data.sequences import EVENT_TYPE, MASK, NUMERIC, STATIC, SUMMARY
from seqchurn.models import ENCODERS, HazardHead, InputSizes, build_encoder

N_TYPES, N_NUMERIC, N_SUMMARY = 9, len(SEQUENCE_CHANNELS), 6
CARDS = [3, 5]

CONFIGS = {
    "logistic": ("logistic", {}),
    "lstm": ("lstm", {"d_model": 16, "hidden": 12, "num_layers": 2}),
    "lstm_nosummary": ("lstm", {"d_model": 16, "hidden": 12, "use_summary": False}),
    "transformer_mean": ("transformer", {"d_model": 16, "nhead": 2, "dim_feedforward": 32}),
    "transformer_cls": (
        "transformer",
        {"d_model": 16, "nhead": 2, "dim_feedforward": 32, "pooling": "cls"},
    ),
    "transformer_index": ("transformer", {"d_model": 16, "nhead": 2, "index_position": True}),
}


def make_batch(lengths, max_len=None, static=True, seed=0) -> dict:
    """Left-aligned events with garbage in the padded numeric slots, so masking is really tested."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    b, t = len(lengths), max_len or int(lengths.max())
    mask = torch.arange(t)[None, :] < lengths[:, None]
    batch = {
        EVENT_TYPE: torch.randint(1, N_TYPES, (b, t), generator=g) * mask,
        NUMERIC: torch.randn(b, t, N_NUMERIC, generator=g),
        MASK: mask,
        SUMMARY: torch.randn(b, N_SUMMARY, generator=g),
    }
    if static:
        batch[STATIC] = torch.stack([torch.randint(0, c, (b,), generator=g) for c in CARDS], dim=1)
    return batch


def pad_more(batch: dict, extra: int, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    b = batch[MASK].shape[0]
    out = dict(batch)
    out[EVENT_TYPE] = torch.cat([batch[EVENT_TYPE], torch.zeros(b, extra, dtype=torch.long)], 1)
    out[NUMERIC] = torch.cat([batch[NUMERIC], torch.randn(b, extra, N_NUMERIC, generator=g)], 1)
    out[MASK] = torch.cat([batch[MASK], torch.zeros(b, extra, dtype=torch.bool)], 1)
    return out


def build(key: str, static: bool = True):
    torch.manual_seed(0)
    name, kwargs = CONFIGS[key]
    cards = CARDS if static else []
    return build_encoder(name, InputSizes(N_TYPES, N_NUMERIC, N_SUMMARY, cards), **kwargs)


@pytest.mark.parametrize("static", [True, False])
@pytest.mark.parametrize("key", list(CONFIGS))
def test_output_shape(key, static):
    enc = build(key, static)
    out = enc(make_batch([3, 1, 7, 5], static=static))
    assert out.shape == (4, enc.out_dim)
    assert torch.isfinite(out).all()


def test_static_key_may_be_absent_or_empty_without_static_columns():
    enc = build("lstm", static=False)
    batch = make_batch([2, 4], static=False)
    a = enc.eval()(batch)
    batch[STATIC] = torch.zeros(2, 0, dtype=torch.long)
    torch.testing.assert_close(enc(batch), a)


def test_static_mismatch_raises():
    enc = build("logistic", static=True)
    batch = make_batch([2, 4], static=False)
    with pytest.raises(ValueError, match="static"):
        enc(batch)


@pytest.mark.parametrize("key", list(CONFIGS))
def test_padding_invariance(key):
    enc = build(key).eval()
    batch = make_batch([3, 1, 7, 5, 2])
    with torch.no_grad():
        a = enc(batch)
        b = enc(pad_more(batch, 6))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("key", ["lstm", "transformer_mean", "transformer_cls"])
def test_independent_of_batch_composition(key):
    enc = build(key).eval()
    batch = make_batch([3, 1, 7, 5, 2])
    with torch.no_grad():
        full = enc(batch)
        perm = torch.tensor([4, 2, 0, 3, 1])
        shuffled = enc({k: v[perm] for k, v in batch.items()})
        torch.testing.assert_close(shuffled, full[perm], atol=1e-5, rtol=0)
        # a single user alone, trimmed to its own length
        single = enc(
            {
                k: (v[1:2, :1] if k in (EVENT_TYPE, NUMERIC, MASK) else v[1:2])
                for k, v in batch.items()
            }
        )
        torch.testing.assert_close(single, full[1:2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("key", list(CONFIGS))
def test_gradients_flow(key):
    enc = build(key).train()
    head = HazardHead(enc.out_dim, n_bins=4)
    head(enc(make_batch([3, 1, 7, 5]))).sum().backward()
    missing = [
        n for n, p in enc.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
    ]
    assert not missing, f"no gradient for {missing}"


def test_registry():
    assert set(ENCODERS) == {"logistic", "lstm", "transformer"}
    sizes = InputSizes(n_event_types=3, n_numeric=N_NUMERIC, n_summary=2)
    with pytest.raises(ValueError, match="logistic"):
        build_encoder("gru", sizes)
    with pytest.raises(ValueError, match="dotted path"):
        build_encoder("collections.OrderedDict", sizes)
    by_path = build_encoder("seqchurn.models.lstm.LSTMEncoder", sizes)
    assert type(by_path) is ENCODERS["lstm"]


def test_transformer_inference_never_takes_the_materializing_fast_path(monkeypatch):
    """The encoder layers' inference fast path builds (B, heads, T, T) attention; it is off
    inside the model's forward and the global setting is restored afterwards."""
    from seqchurn.models.transformer import _no_fastpath

    seen = []
    real = torch._transformer_encoder_layer_fwd
    monkeypatch.setattr(
        torch, "_transformer_encoder_layer_fwd", lambda *a, **k: seen.append(1) or real(*a, **k)
    )
    with _no_fastpath():
        assert not torch.backends.mha.get_fastpath_enabled()
    assert torch.backends.mha.get_fastpath_enabled()
    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, norm_first=True).eval()
    x, pad = torch.randn(3, 5, 8), torch.zeros(3, 5, dtype=torch.bool)
    with torch.inference_mode():
        layer(x, src_key_padding_mask=pad)
        assert seen  # the fast path is real, and the monkeypatch sees it
        seen.clear()
        with _no_fastpath():
            layer(x, src_key_padding_mask=pad)
        build("transformer_mean").eval()(make_batch([3, 5, 1]))  # the model's own forward
    assert not seen
