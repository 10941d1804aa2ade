"""predict on what a shop may hand it: its own log as the output, a directory or an .xlsx as
the output, malformed rows, absurd amounts, odd ids, a broken checkpoint. Each is refused
with a DataError before anything is written, or goes through with the ids unchanged."""

from __future__ import annotations

import hashlib
import os

import pandas as pd
import pytest
import torch

from conftest import predict_file
from seqchurn.errors import DataError


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_log_is_never_the_output(scored, tmp_path):
    ckpt, log, _, _ = scored
    before = _digest(log)
    os.symlink(log, tmp_path / "alias.csv")
    spelled = log.parent / ".." / log.parent.name / log.name
    for output in (log, tmp_path / "alias.csv", spelled):
        with pytest.raises(DataError, match="is the input"):
            predict_file(ckpt, log, output)
    assert _digest(log) == before


@pytest.mark.parametrize(
    "name, match",
    [("folder.parquet", "is a directory"), ("p.xlsx", "must end in .parquet or .csv")],
)
def test_an_output_that_is_not_a_table_file_is_refused(scored, tmp_path, name, match):
    ckpt, log, _, _ = scored
    out = tmp_path / "out"
    out.mkdir()
    if name == "folder.parquet":
        (out / name).mkdir()
    with pytest.raises(DataError, match=match):
        predict_file(ckpt, log, out / name)
    assert sorted(p.name for p in out.iterdir()) == ([name] if name == "folder.parquet" else [])


def test_rows_with_too_many_fields_are_a_data_error(scored, tmp_path):
    ckpt, log, _, _ = scored
    bad = tmp_path / "log.csv"
    bad.write_text(log.read_text() + "u1,2021-01-01,purchase,3.0,1,extra,fields,here\n")
    for stream in (False, True):
        with pytest.raises(DataError, match=f"cannot read {bad}"):
            predict_file(ckpt, bad, tmp_path / "p.parquet", stream=stream)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]


@pytest.mark.parametrize("amount", ["nan", "inf", "1e308"])
def test_non_finite_or_absurd_amounts_are_blamed_on_the_amount(scored, tmp_path, amount):
    ckpt, log, _, _ = scored
    frame = pd.read_csv(log, dtype={"user_id": str})
    frame["amount"] = frame["amount"].astype(object)
    frame.loc[5, "amount"] = amount
    bad = tmp_path / "log.csv"
    frame.to_csv(bad, index=False)
    with pytest.raises(DataError, match=r"amount value\(s\).*line\(s\) 7") as err:
        predict_file(ckpt, bad, tmp_path / "p.parquet")
    assert "p_churn" not in str(err.value)


ODD_IDS = ["007", "7", "000001", "1", " padded ", "NA", "null", "ü-ß 客户", "1e5", "-0"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_ids_come_out_exactly_as_they_went_in(scored, tmp_path, suffix):
    ckpt, log, _, _ = scored
    frame = pd.read_csv(log, dtype={"user_id": str})
    users = frame["user_id"].unique()
    names = {u: ODD_IDS[i] if i < len(ODD_IDS) else f"{i:08d}" for i, u in enumerate(users)}
    frame["user_id"] = frame["user_id"].map(names)
    source = tmp_path / f"log{suffix}"
    frame.to_csv(source, index=False) if suffix == ".csv" else frame.to_parquet(source)
    output = tmp_path / f"p{suffix}"
    predict_file(ckpt, source, output)
    if suffix == ".csv":
        pred = pd.read_csv(output, dtype={"user_id": str}, keep_default_na=False)
    else:
        pred = pd.read_parquet(output)
    eligible = set(frame.loc[pd.to_datetime(frame["timestamp"]) < "2021-04-01", "user_id"])
    assert set(pred["user_id"]) == eligible and set(ODD_IDS) <= eligible
    assert pred["user_id"].is_unique


def test_a_checkpoint_with_non_finite_weights_is_named(scored, tmp_path):
    ckpt, log, _, _ = scored
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    first = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
    state["state_dict"][first] = torch.full_like(state["state_dict"][first], float("nan"))
    broken = tmp_path / "broken.ckpt"
    torch.save(state, broken)
    with pytest.raises(DataError, match="non-finite predictions"):
        predict_file(ckpt=broken, log=log, output=tmp_path / "p.parquet")
    assert not (tmp_path / "p.parquet").exists()
