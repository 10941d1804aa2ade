"""Property: whatever event file a shop sends, the readers and the scoring path either
succeed with every user id round-tripped exactly, or raise one DataError of one line; never
another exception, and never a changed input file.

Files vary in format (CSV, gzipped CSV, TSV, Parquet), encoding, delimiter, quoting, column
types, id forms (leading zeros, spaces, unicode, "NA"), timestamp forms (ISO, compact,
month- or day-first, mixed, extreme years) and amounts (NaN, inf, absurd, text).
`pytest --hypothesis-show-statistics tests/test_properties.py` shows the share of each outcome.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import tempfile
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import predict_file
from seqchurn.errors import DataError
from seqchurn.io import read_events

IDS = st.one_of(
    st.integers(0, 10**6).map(str),
    st.integers(0, 999).map(lambda i: f"{i:05d}"),
    st.sampled_from(["NA", "null", "nan", "None", " 7", "7 ", "1e3", "-0", "+1", "", "  "]),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8),
)
FORMS = {
    "iso_date": "%Y-%m-%d",
    "iso_time": "%Y-%m-%dT%H:%M:%S",
    "iso_zulu": "%Y-%m-%dT%H:%M:%SZ",
    "compact": "%Y%m%d",
    "month_first": "%m/%d/%Y %H:%M",
    "day_first": "%d/%m/%Y",
}
USUAL_DAYS = st.datetimes(datetime(2019, 1, 1), datetime(2021, 6, 30))
EXTREME_DAYS = st.datetimes(datetime(1800, 1, 1), datetime(2999, 12, 31))
AMOUNTS = st.floats(0, 1e4).map(repr)
HOSTILE_AMOUNTS = st.one_of(
    AMOUNTS,
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "nan", "inf", "-1", "1e308", "abc", "1,5", "0"]),
)
TYPES = st.one_of(st.sampled_from(["standard", "gift", "discounted", "NA"]), st.text(max_size=5))


@st.composite
def event_files(draw):
    users = draw(st.lists(IDS, min_size=1, max_size=8, unique=True))
    form = draw(st.sampled_from([*FORMS, *FORMS, "mixed"]))
    # Each file is hostile in a few ways at most, so that both outcomes are common.
    days = draw(st.sampled_from([USUAL_DAYS, USUAL_DAYS, EXTREME_DAYS]))
    amounts = draw(st.sampled_from([AMOUNTS, AMOUNTS, HOSTILE_AMOUNTS]))
    rows = []
    for user in users:
        for _ in range(draw(st.integers(1, 4))):
            when = draw(days)
            fmt = FORMS[draw(st.sampled_from(list(FORMS)))] if form == "mixed" else FORMS[form]
            quantity = draw(st.integers(1, 5).map(str))
            rows.append([user, when.strftime(fmt), draw(TYPES), draw(amounts), quantity])
    if draw(st.booleans()):
        rows = draw(st.permutations(rows))
    return {
        "rows": rows,
        "format": draw(st.sampled_from(["csv", "csv.gz", "tsv", "parquet"])),
        "delimiter": draw(st.sampled_from([",", ",", ",", ";"])),
        "quoting": draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
        "encoding": draw(st.sampled_from(["utf-8"] * 4 + ["utf-8-sig", "latin-1", "utf-16"])),
        "numeric_amounts": draw(st.booleans()),
        "stream": draw(st.booleans()),
    }


HEADER = ["user_id", "timestamp", "event_type", "amount", "quantity"]


def _write(spec, folder):
    if spec["format"] == "parquet":
        frame = pd.DataFrame(spec["rows"], columns=HEADER)
        if spec["numeric_amounts"]:
            frame["amount"] = pd.to_numeric(frame["amount"], errors="coerce")
        path = folder / "log.parquet"
        frame.to_parquet(path)
        return path
    text = io.StringIO()
    sep = "\t" if spec["format"] == "tsv" else spec["delimiter"]
    writer = csv.writer(text, delimiter=sep, quoting=spec["quoting"], lineterminator="\n")
    writer.writerows([HEADER, *spec["rows"]])
    data = text.getvalue().encode(spec["encoding"], errors="replace")
    path = folder / f"log.{spec['format']}"
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=event_files())
def test_any_event_file_is_scored_with_exact_ids_or_refused_in_one_line(scored, tmp_path, spec):
    ckpt = scored[0]
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    path = _write(spec, folder)
    before = path.read_bytes()
    output = folder / "p.csv"
    try:
        events = read_events("events", path, None, "raise", False)
        last = str(events["timestamp"].max().date())  # the last day: every user is eligible
        predict_file(ckpt, path, output, stream=spec["stream"], cutoff=last)
    except DataError as err:
        message = str(err)
        assert message and "\n" not in message
        assert not output.exists()
        event("refused: exit 2")
        event("why: " + re.sub(r"\d+", "N", re.sub(r"/\S+", "FILE", message))[:40])
    else:
        written = {row[0] for row in spec["rows"]}
        assert set(events["user_id"]) == written
        pred = pd.read_csv(output, dtype={"user_id": str}, keep_default_na=False)
        assert set(pred["user_id"]) == written and pred["user_id"].is_unique
        event("scored: exit 0")
    assert path.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) in ([path.name], [path.name, "p.csv"])


@pytest.mark.parametrize("sep", [",", "\t"])
def test_a_clean_file_with_odd_ids_is_scored(scored, tmp_path, sep):
    """The property's success branch is not vacuous: a well-formed file goes through."""
    ckpt = scored[0]
    rows = [[u, "2021-03-01", "standard", "5.0", "1"] for u in ["007", "7", "NA", " x ", "客户"]]
    spec = {
        "rows": rows,
        "format": "csv" if sep == "," else "tsv",
        "delimiter": sep,
        "quoting": csv.QUOTE_MINIMAL,
        "encoding": "utf-8",
        "numeric_amounts": True,
        "stream": sep == "\t",
    }
    path = _write(spec, tmp_path)
    predict_file(ckpt, path, tmp_path / "p.csv", stream=spec["stream"], cutoff="2021-03-01")
    pred = pd.read_csv(tmp_path / "p.csv", dtype={"user_id": str}, keep_default_na=False)
    assert sorted(pred["user_id"]) == sorted(r[0] for r in rows)
