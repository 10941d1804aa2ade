"""Explanations: exact coefficients, IG completeness, zero attribution on padding, sentences with the user's numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from seqchurn.data.events import clean_events
from seqchurn.data.labels import activity_mask, make_snapshots
from seqchurn.data.sequences import EVENT_TYPE, MASK, NUMERIC, OOV_ID, STATIC, SUMMARY, Preprocessor
from seqchurn.data.timeline import EventIndex
from seqchurn.explain import attribution, explain_batch, global_attribution
from seqchurn.explain.sentences import Reasons
from seqchurn.module import ChurnModule
from seqchurn.plots import plot_global

C = 20_000  # the cutoff day
SMALL = {
    "logistic": {},
    "lstm": {"d_model": 8, "hidden": 8},
    "transformer": {"d_model": 8, "nhead": 2, "dim_feedforward": 16, "num_layers": 1},
}
# (user, days before C, type, amount): users whose numbers the sentences must repeat
# rec: silent for 143 days, ordered every 31; one: a single order; cmp: 2 complaints in 30 days;
# drop: $800 over a year, then $5 in the last 90 days
KNOWN = (
    [("rec", d, "purchase", a) for d, a in [(205, 30), (174, 40), (143, 50)]]
    + [("one", 60, "purchase", 25)]
    + [
        ("cmp", 100, "purchase", 20),
        ("cmp", 40, "purchase", 20),
        ("cmp", 20, "complaint", 0),
        ("cmp", 10, "complaint", 0),
    ]
    + [("drop", d, "purchase", 200) for d in (380, 300, 220, 140)]
    + [("drop", 20, "purchase", 5)]
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 2000
    day = C - 400 + rng.integers(0, 401, n)
    kind = rng.choice(["purchase", "view", "complaint"], n, p=[0.5, 0.4, 0.1])
    raw = pd.DataFrame(
        {
            "user_id": rng.integers(0, 80, n).astype(str),
            "timestamp": pd.to_datetime(day, unit="D")
            + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s"),
            "event_type": kind,
            "amount": np.where(kind == "purchase", rng.exponential(20, n).round(2) + 1, 0.0),
            "quantity": rng.integers(1, 4, n).astype(float),
        }
    )
    users, ago, types, amounts = zip(*KNOWN)
    known = pd.DataFrame(
        {
            "user_id": users,
            "timestamp": pd.to_datetime(C - np.array(ago), unit="D") + pd.Timedelta(hours=12),
            "event_type": types,
            "amount": np.array(amounts, dtype=float),
            "quantity": 1.0,
        }
    )
    events = clean_events(pd.concat([raw, known], ignore_index=True))[0]
    attrs = pd.DataFrame({"user_id": np.unique(events["user_id"])})
    attrs["country"] = np.where(np.arange(len(attrs)) % 3 == 0, "DE", "FR")
    act = ["purchase"]
    snaps = make_snapshots(events, [C], horizon=90, obs_end=None, activity_event_types=act)
    index = EventIndex(events, activity_mask(events, act))
    prep = Preprocessor.fit(index, snaps, attrs, max_len=12, activity_event_types=act)
    ds = prep.transform(index, snaps, attrs, keep_raw=True)
    return prep, ds


def build(prep: Preprocessor, encoder: str, seed: int = 0, **kwargs) -> ChurnModule:
    torch.manual_seed(seed)
    model = ChurnModule(
        encoder=encoder,
        bin_edges=[0, 30, 90],
        encoder_kwargs={**SMALL[encoder], **kwargs},
        **prep.sizes,
    )
    with torch.no_grad():
        model.head.linear.weight.mul_(
            3.0
        )  # random weights give tiny logits; make attributions sizable
    return model.eval()


def rows_of(ds, *users) -> np.ndarray:
    where = {u: i for i, u in enumerate(ds.user_id)}
    return np.array([where[u] for u in users])


def completeness_error(res) -> np.ndarray:
    return np.abs(res.channel_attr.sum(1).to_numpy() + res.baseline_logit - res.logit)


def test_coef_is_exact_for_the_logistic_model(data):
    prep, ds = data
    model = build(prep, "logistic")
    batch = ds[np.arange(len(ds))]
    res = explain_batch(model, batch, prep, method="ig")
    assert res.method == "coef"  # the logistic encoder always gets the exact method
    with torch.no_grad():
        logit = model(batch)[:, 0].numpy()
    np.testing.assert_allclose(res.logit, logit, atol=1e-6)
    np.testing.assert_allclose(
        res.channel_attr.sum(1).to_numpy() + res.baseline_logit, logit, atol=1e-5
    )
    w = model.head.linear.weight[0, : len(prep.summary_names)].detach().numpy()
    expected = batch[SUMMARY].numpy() * w
    np.testing.assert_allclose(res.channel_attr[prep.summary_names].to_numpy(), expected, atol=1e-6)
    assert res.channel_attr["static:country"].abs().max() > 1e-4
    assert np.all(res.position_attr == 0) and np.all(res.channel_attr.filter(like="seq_") == 0)


def test_integrated_gradients_on_a_linear_model_equal_the_coefficients(data):
    prep, ds = data
    model = build(prep, "logistic")
    inputs = attribution.model_inputs(ds[np.arange(20)], torch.device("cpu"))
    ig = attribution.gradient_attr(model, inputs, method="ig", n_steps=8, internal_batch_size=None)
    coef = attribution.coef_attr(model, inputs)
    for key in ("summary", "static", "baseline_logit", "logit"):
        torch.testing.assert_close(ig[key], coef[key], atol=1e-5, rtol=1e-5, msg=key)


@pytest.mark.parametrize("encoder, tol", [("lstm", 1e-3), ("transformer", 2e-2)])
def test_integrated_gradients_are_complete(data, encoder, tol):
    prep, ds = data
    model = build(prep, encoder)
    batch = ds[np.arange(len(ds))]
    ig = explain_batch(model, batch, prep, method="ig", n_steps=32)
    span = np.abs(ig.logit - ig.baseline_logit)
    assert span.mean() > 0.1
    assert completeness_error(ig).max() < tol * max(1.0, span.max())
    # every input group carries attribution: leaving one out breaks completeness
    err = completeness_error(ig).mean()
    for like in ("seq_type:", "seq_amount", "seq_days_before", "static:", "recency"):
        part = ig.channel_attr.filter(like=like).sum(1).to_numpy()
        assert (completeness_error(ig) + np.abs(part)).mean() > 10 * err, like
    np.testing.assert_allclose(
        ig.position_attr.sum(1), ig.channel_attr.filter(like="seq_").sum(1), atol=1e-5
    )
    # gradient x input is no substitute for completeness on a nonlinear model
    gxi = explain_batch(model, batch, prep, method="grad_x_input")
    assert gxi.method == "grad_x_input"
    assert completeness_error(gxi).mean() > 10 * completeness_error(ig).mean()


@pytest.mark.parametrize("encoder", ["lstm", "transformer"])
@pytest.mark.parametrize("method", ["ig", "grad_x_input"])
def test_padding_gets_zero_attribution_and_changes_nothing(data, encoder, method):
    prep, ds = data
    model = build(prep, encoder)
    rows = np.argsort(ds.lengths)[[0, 1, len(ds) // 2, -1]]
    assert ds.lengths[rows[0]] < ds.lengths[rows[-1]]
    batch = ds[rows]
    pad = ~batch[MASK]
    batch[NUMERIC] = batch[NUMERIC] + 7.0 * pad[..., None]  # garbage in padded slots
    res = explain_batch(model, batch, prep, method=method, n_steps=16, raw=ds.raw(rows))
    assert pad.any() and np.all(res.position_attr[pad.numpy()] == 0)
    for i, r in enumerate(rows):
        alone = explain_batch(model, ds[[r]], prep, method=method, n_steps=16, raw=ds.raw([r]))
        np.testing.assert_allclose(res.channel_attr.iloc[i], alone.channel_attr.iloc[0], atol=1e-5)
        n = int(ds.lengths[r])
        np.testing.assert_allclose(res.position_attr[i, :n], alone.position_attr[0], atol=1e-5)
        assert res.reasons[i] == alone.reasons[0]


def hand_set_logistic(prep: Preprocessor, weights: dict[str, float]) -> ChurnModule:
    model = build(prep, "logistic")
    with torch.no_grad():
        model.head.linear.weight.zero_()
        model.head.linear.bias.zero_()
        for name, w in weights.items():
            model.head.linear.weight[0, prep.summary_names.index(name)] = w
    return model


def test_sentences_repeat_the_users_own_numbers(data):
    prep, ds = data
    model = hand_set_logistic(
        prep,
        {
            "recency_days": 1.0,
            "frequency_days": -1.0,
            "count_complaint_30d": 1.0,
            "spend_90d": -1.0,
        },
    )
    users = ["rec", "one", "cmp", "drop"]
    rows = rows_of(ds, *users)
    res = explain_batch(model, ds[rows], prep, raw=ds.raw(rows))
    said = dict(zip(res.channel_attr.index, res.reasons))
    assert "no order for 143 days, usually orders every 31 days" in said["rec"].split("; ")
    assert "only 3 orders in total" in said["rec"].split("; ")
    assert "spend" not in said["rec"]  # no spend in 90 days is implied by 143 silent days
    assert "only 1 order in total" in said["one"].split("; ")
    assert "2 complaints in the last 30 days" in said["cmp"].split("; ")
    assert any(
        s.startswith("spend in the last 90 days fell to $5 ") for s in said["drop"].split("; ")
    )
    assert all(0 < len(r.split("; ")) <= 3 for r in res.reasons)
    top1 = explain_batch(model, ds[rows], prep, top_k=1, raw=ds.raw(rows))
    assert [r.split("; ")[0] for r in res.reasons] == top1.reasons
    assert list(res.channel_attr.index) == users and res.method == "coef"


def test_no_positive_contribution_gives_no_reason(data):
    prep, ds = data
    model = hand_set_logistic(prep, {})
    rows = np.arange(10)
    res = explain_batch(model, ds[rows], prep, raw=ds.raw(rows))
    assert res.reasons == [""] * 10
    assert explain_batch(model, ds[rows], prep).reasons is None  # no raw inputs, no sentences


def _sentences_of(prep, ds, rows, weights: dict[str, float], top_k: int = 3) -> list[str]:
    """The reasons for hand-set attributions: +weight on the named inputs, -1 on the others."""
    batch = ds[rows]
    names = [f.name for f in prep.inputs]
    attr = pd.DataFrame(-np.ones((len(rows), len(names))), columns=names)
    for name, w in weights.items():
        attr[name] = w
    inputs = {k: batch[k].numpy() for k in (EVENT_TYPE, MASK, SUMMARY, STATIC)}
    return Reasons(attr, raw=ds.raw(rows), batch=inputs, prep=prep, currency="$").sentences(top_k)


def test_sequence_sentences_count_the_users_events(data):
    prep, ds = data
    rows = rows_of(ds, "cmp")
    said = _sentences_of(prep, ds, rows, weights={"seq_type:complaint": 2.0, "seq_amount": 1.0})
    assert said == [
        "2 complaints among the last 4 events, latest 10 days ago; "
        "average $20 per order in the last 4 events"
    ]
    # the latest event was a complaint, not an order: its day is a fact of its own
    assert _sentences_of(prep, ds, rows, weights={"seq_days_before_cutoff": 1.0}) == [
        "last seen 10 days ago"
    ]
    # two orders in total, and both were purchases: the purchase count is the order count
    assert _sentences_of(prep, ds, rows, weights={"seq_type:purchase": 2.0}) == [
        "only 2 orders in total"
    ]
    # one order: gaps and the purchase count say no more than the order count; their four
    # -1 groups merge with it
    rows = rows_of(ds, "one")
    said = _sentences_of(prep, ds, rows, weights={"seq_amount": 1.0, "seq_gap_prev_days": 4.5})
    assert said == ["a single order of $25; only 1 order in total"]


def test_sentences_are_the_same_for_a_user_alone_and_in_a_batch(data):
    prep, ds = data
    model = build(prep, "lstm")
    rows = np.arange(len(ds))
    res = explain_batch(model, ds[rows], prep, method="grad_x_input", raw=ds.raw(rows))
    assert sum(bool(r) for r in res.reasons) > 0.9 * len(rows)
    for r in rows_of(ds, "rec", "one", "cmp", "drop"):
        alone = explain_batch(model, ds[[r]], prep, method="grad_x_input", raw=ds.raw([r]))
        assert alone.reasons[0] == res.reasons[r]


def test_deterministic_in_train_mode_and_mode_restored(data):
    prep, ds = data
    model = build(prep, "lstm", dropout=0.5).train()
    batch = ds[np.arange(30)]
    first = explain_batch(model, batch, prep, method="ig", n_steps=8)
    again = explain_batch(model, batch, prep, method="ig", n_steps=8)
    assert model.training
    pd.testing.assert_frame_equal(first.channel_attr, again.channel_attr, check_exact=True)
    np.testing.assert_array_equal(first.position_attr, again.position_attr)
    assert first.reasons == again.reasons


def test_inference_mode_batch_preprocessor_from_the_model_unseen_types_and_unused_summary(data):
    prep, ds = data
    model = build(prep, "lstm", use_summary=False)
    model.preprocessing = {"preprocessor": prep.state_dict()}
    with torch.inference_mode():
        batch = ds[np.arange(20)]
        batch[EVENT_TYPE] = torch.where(
            batch[EVENT_TYPE] == prep.vocab["view"], OOV_ID, batch[EVENT_TYPE]
        )
    res = explain_batch(model, batch, method="ig", n_steps=8, events_per_pass=64)
    assert np.all(res.channel_attr[prep.summary_names].to_numpy() == 0)
    assert res.channel_attr["seq_type:<unseen>"].abs().sum() > 0 and np.all(
        res.channel_attr["seq_type:view"] == 0
    )
    assert completeness_error(res).max() < 1e-3


def test_global_attribution_counts_positions_from_the_latest_event(data, tmp_path):
    prep, ds = data
    model = build(prep, "lstm")
    order = np.argsort(ds.lengths)
    results = [
        explain_batch(model, ds[order[:20]], prep, method="grad_x_input"),
        explain_batch(model, ds[order[-20:]], prep, method="grad_x_input"),
    ]
    per_channel, per_position = global_attribution(results)
    assert per_channel.index[0] == per_channel["mean_abs"].idxmax()
    last = np.concatenate([np.abs(r.position_attr[np.arange(20), r.lengths - 1]) for r in results])
    assert per_position[0] == pytest.approx(last.mean())
    assert len(per_position) == ds.lengths.max()
    deepest = np.concatenate([r.position_attr[r.lengths == ds.lengths.max(), 0] for r in results])
    assert per_position[-1] == pytest.approx(np.abs(deepest).mean())
    path = plot_global(results, tmp_path / "global.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_method_is_refused(data):
    prep, ds = data
    with pytest.raises(ValueError, match="logistic"):
        explain_batch(build(prep, "lstm"), ds[[0]], prep, method="coef")
    with pytest.raises(ValueError, match="method must be one of"):
        explain_batch(build(prep, "lstm"), ds[[0]], prep, method="shap")


def test_ig_steps_batched_per_pass_give_the_one_step_per_pass_attributions(data):
    prep, ds = data
    model = build(prep, "lstm")
    batch = ds[np.arange(30)]
    runs = [
        explain_batch(model, batch, prep, method="ig", n_steps=8, events_per_pass=size)
        for size in (1, 30 * int(batch[MASK].shape[1]) * 3, None)  # 1, 3 and all 8 steps a pass
    ]
    for other in runs[1:]:
        np.testing.assert_allclose(
            other.channel_attr.to_numpy(), runs[0].channel_attr.to_numpy(), atol=1e-5
        )
