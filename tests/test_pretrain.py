"""pretrain=coles: InfoNCE, random slices, no leakage past the test cutoff, training, the CLI."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import compose_cfg
from seqchurn.data.sequences import EVENT_TYPE, MASK, NUMERIC, PAD_ID, SUMMARY
from seqchurn.datamodule import ChurnDataModule
from seqchurn.errors import DataError
from seqchurn.losses import info_nce
from seqchurn.module import ChurnModule
from seqchurn.pretrain import CoLES, pretraining_dataset, random_slices
from seqchurn.simulate import bgnbd_log
from seqchurn.train import train
from test_models import build, make_batch
from test_train import _cli

TINY = [
    "data=synthetic_sequence",
    "data.synthetic.n_users=300",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "logger=csv",
    "pretrain=coles",
    "pretrain.epochs=1",
]


# -- InfoNCE -------------------------------------------------------------------------------
def _naive_info_nce(z, groups, t):
    z = torch.nn.functional.normalize(z, dim=1)
    terms = []
    for i in range(len(z)):
        others = [k for k in range(len(z)) if k != i]
        denom = torch.logsumexp(torch.stack([z[i] @ z[k] / t for k in others]), 0)
        terms += [denom - z[i] @ z[j] / t for j in others if groups[j] == groups[i]]
    return torch.stack(terms).mean()


def test_info_nce_matches_a_naive_loop_with_three_views():
    g = torch.Generator().manual_seed(0)
    z, groups = torch.randn(12, 5, generator=g), torch.arange(4).repeat(3)
    torch.testing.assert_close(info_nce(z, groups, 0.3), _naive_info_nce(z, groups, 0.3))


def test_info_nce_is_log_candidates_for_constant_embeddings():
    z = torch.ones(2 * 8, 3)  # 8 users, 2 views: every view has 15 equally likely candidates
    assert info_nce(z, torch.arange(8).repeat(2), 0.1).item() == pytest.approx(math.log(15))


def test_info_nce_is_lower_for_aligned_views_than_for_shuffled_pairs():
    g = torch.Generator().manual_seed(1)
    anchors = torch.randn(32, 16, generator=g)
    partner = anchors + 0.1 * torch.randn(32, 16, generator=g)
    groups = torch.arange(32).repeat(2)
    aligned = info_nce(torch.cat([anchors, partner]), groups)
    shuffled = info_nce(torch.cat([anchors, partner[torch.randperm(32, generator=g)]]), groups)
    assert aligned < 0.5 < shuffled


def test_info_nce_needs_two_views_per_user():
    with pytest.raises(ValueError, match="two views"):
        info_nce(torch.randn(3, 4), torch.tensor([0, 0, 1]))


# -- slices ---------------------------------------------------------------------------------
SLICING = {"min_frac": 0.3, "max_frac": 0.9, "min_events": 2}


def _positional_batch(lengths, width=50):
    """Left-aligned events whose numeric channel 0 is their position + 1 in the row."""
    batch = make_batch(lengths, max_len=width)
    pos = torch.arange(width, dtype=torch.float32)[None, :].expand(len(lengths), -1)
    batch[NUMERIC][..., 0] = (pos + 1) * batch[MASK]
    batch[NUMERIC] = batch[NUMERIC] * batch[MASK][..., None]
    return batch


def test_every_view_is_a_contiguous_run_in_order_with_the_batch_layout():
    lengths = [1, 2, 3, 5, 17, 40]
    batch = _positional_batch(lengths)
    views, groups = random_slices(batch, 3, generator=torch.Generator().manual_seed(0), **SLICING)
    assert set(views) == {EVENT_TYPE, NUMERIC, MASK}  # no summary or static feature
    assert groups.tolist() == list(range(len(lengths))) * 3
    size = views[MASK].sum(1)
    steps = torch.arange(views[MASK].shape[1])
    assert torch.equal(views[MASK], steps[None, :] < size[:, None])  # left-aligned, like batch
    assert (views[EVENT_TYPE][~views[MASK]] == PAD_ID).all()
    assert (views[NUMERIC][~views[MASK]] == 0).all()
    for v, row in enumerate(groups.tolist()):
        n, k = lengths[row], int(size[v])
        lo = max(math.ceil(0.3 * n), min(2, n))
        assert lo <= k <= max(lo, int(0.9 * n))
        pos = views[NUMERIC][v, :k, 0].long() - 1  # the original positions, in order
        assert pos[0] >= 0 and pos[-1] < n and torch.equal(pos, pos[0] + torch.arange(k))
        # every channel (the time channels too) and the event type are the originals
        assert torch.equal(views[NUMERIC][v, :k], batch[NUMERIC][row, pos])
        assert torch.equal(views[EVENT_TYPE][v, :k], batch[EVENT_TYPE][row, pos])


def test_slice_lengths_and_starts_cover_their_whole_range():
    batch = _positional_batch([40] * 2000)
    views, _ = random_slices(batch, 2, generator=torch.Generator().manual_seed(0), **SLICING)
    size = views[MASK].sum(1)
    assert (size.min(), size.max()) == (12, 36)  # ceil(0.3 * 40), floor(0.9 * 40)
    first = views[NUMERIC][:, 0, 0]
    assert first.min() == 1 and (first + size - 1).max() == 40  # slices reach both ends


def test_views_are_reproducible_from_the_generator():
    batch = _positional_batch([5, 30, 12])
    a, _ = random_slices(batch, 2, generator=torch.Generator().manual_seed(3), **SLICING)
    b, _ = random_slices(batch, 2, generator=torch.Generator().manual_seed(3), **SLICING)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("key", ["lstm", "transformer_mean", "transformer_cls"])
def test_the_user_vector_is_the_sequence_part_then_the_user_features(key):
    encoder = build(key).eval()
    batch = make_batch([3, 1, 7])
    with torch.no_grad():
        out, seq = encoder(batch), encoder.sequence(batch)
    assert seq.shape == (3, encoder.sequence_dim)
    torch.testing.assert_close(out[:, : encoder.sequence_dim], seq)
    with torch.no_grad():  # the sequence part never reads the whole-history features
        encoder.sequence({k: v for k, v in batch.items() if k in (EVENT_TYPE, NUMERIC, MASK)})


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"min_frac": 0.8, "max_frac": 0.5}, "min_frac"),
        ({"n_views": 1}, "n_views"),
        ({"temperature": 0}, "temperature"),
        ({"epochs": 0}, "pretrain.epochs"),
    ],
)
def test_bad_settings_are_data_errors(setting, message):
    with pytest.raises(DataError, match=message):
        CoLES(**setting)


# -- data: nothing after the test cutoff ----------------------------------------------------
TEST_CUTOFF, OBS_END = "2021-03-31", "2021-06-29"


def _datamodule(path) -> ChurnDataModule:
    cols = ("user_id", "timestamp", "event_type", "amount", "quantity")
    dm = ChurnDataModule(
        path=str(path),
        source="events",
        test_cutoff=TEST_CUTOFF,
        obs_end=OBS_END,
        columns={c: c for c in cols},
    )
    dm.setup()
    return dm


def test_events_after_the_test_cutoff_change_no_pretraining_input(tmp_path):
    events = bgnbd_log(n_users=400, seed=3, horizon_weeks=78, start="2020-01-01").events
    events = events[["user_id", "timestamp", "event_type", "amount", "quantity"]]
    rng = np.random.default_rng(0)
    # later purchases of known users (their test labels) and users who start after the cutoff
    who = np.concatenate([rng.choice(events["user_id"].unique(), 150), ["late1", "late2"] * 5])
    later = pd.DataFrame(
        {
            "user_id": who,
            "timestamp": pd.Timestamp(TEST_CUTOFF)
            + pd.to_timedelta(rng.integers(1, 80, len(who)), unit="D"),
            "event_type": "purchase",
            "amount": rng.exponential(30, len(who)).round(2),
            "quantity": 1.0,
        }
    )
    base, enlarged = tmp_path / "base.csv", tmp_path / "enlarged.csv"
    events.to_csv(base, index=False)
    pd.concat([events, later]).to_csv(enlarged, index=False)
    a, b = _datamodule(base), _datamodule(enlarged)
    assert not a.snapshots["test"]["y"].equals(b.snapshots["test"]["y"])  # the labels moved
    da, db = pretraining_dataset(a), pretraining_dataset(b)
    assert da.labels is None and list(da.user_id) == list(db.user_id)
    rows = np.arange(len(da))
    batch_a, batch_b = da[rows], db[rows]  # the inputs, whatever rows of the log they point at
    for name in ("event_type", "numeric", "mask", "cutoff"):
        assert torch.equal(batch_a[name], batch_b[name]), name
    assert (da.cutoff == a.test_cutoff).all()
    assert not set(da.user_id) & set(a.snapshots["val"]["user_id"])  # validation users out
    assert set(a.snapshots["train"]["user_id"]) <= set(da.user_id)


# -- pretraining and training ---------------------------------------------------------------
@pytest.fixture(scope="module")
def sequence_data(tmp_path_factory):
    from hydra.utils import instantiate

    cfg = compose_cfg(TINY + ["model=lstm"], tmp_path_factory.mktemp("pre"))
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup()
    return cfg, dm, pretraining_dataset(dm)


def test_pretraining_lowers_the_loss_and_moves_only_the_sequence_weights(sequence_data):
    from hydra.utils import instantiate

    cfg, dm, dataset = sequence_data
    torch.manual_seed(0)
    model = instantiate(cfg.model, bin_edges=dm.bin_edges, **dm.sizes, _convert_="all")
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    rng = torch.get_rng_state()
    losses = CoLES(epochs=3, seed=0).fit(model.encoder, dataset)
    assert losses[-1] < losses[0] and all(np.isfinite(losses))
    assert torch.equal(torch.get_rng_state(), rng)  # fine-tuning's dropout is unaffected
    after = model.encoder.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("lstm.") for k in moved) and any(k.startswith("embed.") for k in moved)
    assert not any(k.startswith("user.") for k in moved)
    assert SUMMARY not in random_slices(dataset[[0, 1]], 2, **SLICING)[0]


def test_logistic_with_pretraining_exits_2_with_one_error_line(tmp_path):
    proc, run_dir = _cli(tmp_path, "pretrain=coles", "model=logistic", "data=synthetic")
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "pretrain=coles needs an encoder" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and not run_dir.exists()


def test_pretrained_lstm_trains_end_to_end_and_is_deterministic(tmp_path):
    runs = [train(compose_cfg(TINY + ["model=lstm"], tmp_path / f"run{i}")) for i in range(2)]
    (metrics, objects), (_, again) = runs
    assert metrics["time/pretrain_s"] > 0 and np.isfinite(metrics["pretrain/loss"])
    assert objects["model"].hparams.pretrained == "coles"
    loaded = ChurnModule.load_from_checkpoint(objects["best_ckpt"], map_location="cpu")
    assert loaded.hparams.pretrained == "coles"
    first, second = objects["test_predictions"], again["test_predictions"]
    np.testing.assert_array_equal(first["index"], second["index"])
    np.testing.assert_array_equal(first["p_churn"], second["p_churn"])


def test_pretrained_transformer_trains_end_to_end(make_cfg):
    metrics, objects = train(make_cfg(TINY + ["model=transformer"]))
    assert np.isfinite(metrics["test/auroc"]) and objects["model"].hparams.pretrained == "coles"
