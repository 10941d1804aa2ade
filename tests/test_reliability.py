"""Nothing a shop sends corrupts data, destroys a file or ends in a traceback (issue 13).

Reader-level findings run in-process; the command-line ones as subprocesses (each pays the
torch import, so they are few).
"""

import gzip
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT
from seqchurn.data.events import load_events, read_table
from seqchurn.data.stream import iter_user_chunks
from seqchurn.errors import DataError
from seqchurn.io import check_outputs, remove_stale_temps, write_table


def _log(path, users=("007", "7", "000001", "1"), **extra):
    frame = pd.DataFrame(
        {
            "user_id": list(users),
            "timestamp": ["2020-01-0%d" % (i + 1) for i in range(len(users))],
            "amount": [1.0] * len(users),
            **extra,
        }
    )
    frame.to_csv(path, index=False)
    return path


def test_ids_keep_leading_zeros_in_every_reader(tmp_path):
    # Before: "007" and "7" became one customer, "000001" became "1".
    path = _log(tmp_path / "log.csv")
    events, _ = load_events("events", path)
    assert sorted(events["user_id"]) == sorted(["007", "7", "000001", "1"])
    streamed = pd.concat(
        c.frame for c in iter_user_chunks("events", path, chunk_rows=1, stream=True)
    )
    assert sorted(streamed["user_id"]) == sorted(["007", "7", "000001", "1"])
    assert read_table(path)["user_id"].tolist() == ["007", "7", "000001", "1"]


def test_streaming_needs_contiguous_users_not_sorted_ones(tmp_path):
    # numerically sorted ids: "9" < "10" as numbers, not as strings
    path = _log(tmp_path / "log.csv", users=("9", "9", "10", "10", "100"))
    chunks = list(iter_user_chunks("events", path, chunk_rows=2, stream=True))
    assert [sorted(set(c.frame["user_id"])) for c in chunks] == [["9"], ["10"], ["100"]]
    interleaved = _log(tmp_path / "bad.csv", users=("9", "10", "9"))
    with pytest.raises(DataError, match="not contiguous"):
        list(iter_user_chunks("events", interleaved, chunk_rows=1, stream=True))


@pytest.mark.parametrize(
    "amount, match",
    [
        (1e308, "absurd"),
        (float("inf"), "infinite"),
        ("12abc", "non-numeric"),
        (-1.0, "negative"),
    ],
)
def test_absurd_amounts_are_refused_with_the_column_and_line(tmp_path, amount, match):
    # Before: 1e308 trained a checkpoint whose predictions were NaN.
    path = tmp_path / "log.csv"
    pd.DataFrame(
        {"user_id": ["a", "b"], "timestamp": ["2020-01-01"] * 2, "amount": [1.0, amount]}
    ).to_csv(path, index=False)
    with pytest.raises(DataError, match=rf"({match}).* amount .*line\(s\) 3"):
        load_events("events", path)


def test_the_bound_is_configurable(tmp_path):
    path = tmp_path / "log.csv"
    pd.DataFrame({"user_id": ["a"], "timestamp": ["2020-01-01"], "amount": [5e5]}).to_csv(
        path, index=False
    )
    from seqchurn.data.events import clean_events, read_raw

    with pytest.raises(DataError, match="absurd"):
        clean_events(read_raw("events", path), max_value=1e5)


def _many_rows() -> bytes:
    rows = "".join(f"u{i * 7919 % 100003},2020-01-{i % 28 + 1:02d}\n" for i in range(20000))
    return ("user_id,timestamp\n" + rows).encode()


def _gz(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "name, make",
    [
        (
            "truncated.csv.gz",
            lambda: gzip.compress(_many_rows())[:2000],
        ),
        ("fake.csv.gz", lambda: b"user_id,timestamp\na,2020-01-01\n"),
        ("fields.csv", lambda: b"user_id,timestamp\na,2020-01-01\nb,2020-01-02,3,4\n"),
        ("latin1.csv", lambda: "user_id,timestamp\nJos\xe9,2020-01-01\n".encode("latin-1")),
    ],
)
def test_broken_files_are_a_data_error(tmp_path, name, make):
    path = _gz(tmp_path / name, make())
    with pytest.raises(DataError, match=f"cannot read {path}"):
        load_events("events", path)


def test_an_empty_directory_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .parquet file in the directory"):
        load_events("events", tmp_path / "empty")


def test_outputs_never_clobber_inputs(tmp_path):
    log = _log(tmp_path / "log.csv")
    with pytest.raises(DataError, match="is the input"):
        check_outputs([log], [log])
    os.symlink(log, tmp_path / "alias.csv")
    with pytest.raises(DataError, match="is the input"):
        check_outputs([tmp_path / "alias.csv"], [log])
    (tmp_path / "parts").mkdir()
    with pytest.raises(DataError, match="is the input"):
        check_outputs([tmp_path / "parts" / "p.parquet"], [tmp_path / "parts"])
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        check_outputs([tmp_path / "folder.csv"], [])
    with pytest.raises(DataError, match=r"must end in .parquet or .csv, not '.xlsx'"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "out.xlsx")
    assert not (tmp_path / "out.xlsx").exists()


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    target = tmp_path / "out.parquet"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".out.parquet.seqchurn-tmp-{dead.stdout.strip()}-abc.part"
    live = tmp_path / f".out.parquet.seqchurn-tmp-{os.getppid()}-abc.part"
    stale.write_text("x")
    live.write_text("x")
    assert remove_stale_temps(target) == [stale]
    assert live.exists() and not stale.exists()


def _run(script, tmp_path, *args):
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / script),
        f"hydra.run.dir={tmp_path / 'run'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("train.py", ["data.batch_size=0"], "data.batch_size must be a positive integer, got 0"),
        ("train.py", ["data.max_len=0"], "data.max_len must be a positive integer"),
        (
            "train.py",
            ["data.horizon_days=abc"],
            "data.horizon_days must be a positive integer, got 'abc'",
        ),
        (
            "train.py",
            ["model=gru"],
            "unknown model 'gru'; choose one of logistic, lstm, transformer",
        ),
        ("train.py", ["trainer.max_epochs=0"], "trainer.max_epochs must be a positive integer"),
        ("train.py", ["data.test_cutoff=19971231x"], "data.test_cutoff must be a date"),
        ("predict.py", [], "missing mandatory value ckpt_path"),
        (
            "predict.py",
            ["ckpt_path=x.ckpt", "scoring.batch_size=0"],
            "scoring.batch_size must be a positive",
        ),
        (
            "plan.py",
            ["predictions=p.csv", "retention.budget=nan"],
            "retention.budget must be a finite number",
        ),
        (
            "simulate_campaign.py",
            ["step=history", "out=h.csv", "data.synthetic.n_users=0"],
            "n_users must be a positive",
        ),
    ],
)
def test_bad_config_exits_2_with_one_line_and_no_run_folder(tmp_path, script, args, message):
    if script == "plan.py":
        pd.DataFrame({"user_id": ["a"], "p_churn": [0.5]}).to_csv(tmp_path / "p.csv", index=False)
    proc = _run(script, tmp_path, *args)
    assert proc.returncode == 2, proc.stderr[-1500:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [proc.stderr.strip().splitlines()[-1]] and message in errors[0], proc.stderr
    assert not (tmp_path / "run").exists() or not any(
        p
        for p in (tmp_path / "run").iterdir()
        if p.name != ".hydra" and not p.name.endswith(".log")
    )
    assert "Traceback" not in proc.stderr
