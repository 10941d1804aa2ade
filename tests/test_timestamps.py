"""Timestamps are read one way per column (issue 13, finding 3) and dates in the config are dates."""

import numpy as np
import pandas as pd
import pytest

from seqchurn.data.events import clean_events
from seqchurn.data.timestamps import config_day
from seqchurn.errors import DataError


def _days(values, **kw):
    frame = pd.DataFrame({"user_id": [str(i) for i in range(len(values))], "timestamp": values})
    out, _ = clean_events(frame, **kw)
    return (
        out.sort_values("user_id", key=lambda s: s.astype(int))["timestamp"]
        .dt.strftime("%Y-%m-%d")
        .tolist()
    )


def test_one_value_that_rules_out_month_first_makes_the_whole_column_day_first():
    # Before: "06/02/2020" was read as 2 June and "13/02/2020" as 13 February, row by row.
    assert _days(["06/02/2020", "13/02/2020"]) == ["2020-02-06", "2020-02-13"]


def test_a_us_export_reads_month_first_when_a_value_rules_out_day_first():
    assert _days(["12/1/2010 8:26", "12/13/2010 14:05"]) == ["2010-12-01", "2010-12-13"]


def test_a_column_both_readings_fit_is_refused_unless_the_format_is_given():
    with pytest.raises(
        DataError, match=r"both as day/month/year and as month/day/year.*timestamp_format"
    ):
        _days(["06/02/2020", "07/03/2020"])
    assert _days(["06/02/2020", "07/03/2020"], timestamp_format="%d/%m/%Y") == [
        "2020-02-06",
        "2020-03-07",
    ]
    assert _days(["06/02/2020", "07/03/2020"], timestamp_format="%m/%d/%Y") == [
        "2020-06-02",
        "2020-07-03",
    ]


def test_a_column_neither_reading_fits_is_refused():
    with pytest.raises(DataError, match="neither all day/month/year nor all month/day/year"):
        _days(["13/02/2020", "02/13/2020"])


def test_iso_compact_and_zones():
    assert _days(["2020-01-05", "2020-01-06T23:30:00"]) == ["2020-01-05", "2020-01-06"]
    assert _days(["20200105", "19991231"]) == ["2020-01-05", "1999-12-31"]
    # 23:30 at -05:00 is 04:30 UTC the next day
    assert _days(["2020-01-06T23:30:00-05:00", "2020-01-01T00:00:00Z"]) == [
        "2020-01-07",
        "2020-01-01",
    ]
    with pytest.raises(DataError, match="mix values with a time zone and values without"):
        _days(["2020-01-06T23:30:00+01:00", "2020-01-01 10:00"])


def test_out_of_range_years_are_named_as_such():
    # Before: a year-2999 timestamp was called "unparsable".
    with pytest.raises(DataError, match=r"year outside 1900..2200.*2999"):
        _days(["2020-01-05", "2999-01-01"])
    with pytest.raises(DataError, match=r"year outside"):
        _days(["1850-01-05", "2020-01-01"])


def test_a_wrong_format_names_the_lines():
    with pytest.raises(DataError, match=r"unparsable timestamp.*line 3: '2020-01-06'"):
        _days(["05/01/2020", "2020-01-06"], timestamp_format="%d/%m/%Y")


@pytest.mark.parametrize(
    "value, day",
    [("2021-03-31", "2021-03-31"), (20210331, "2021-03-31"), ("20210331", "2021-03-31")],
)
def test_config_dates(value, day):
    # Before: data.test_cutoff=20210331 (an int to Hydra) was read as a day count, year 57304.
    assert config_day(value, "data.test_cutoff") == np.datetime64(day, "D").astype(int)


@pytest.mark.parametrize("value", [18000, "yesterday", "2999-01-01", True, 1.5])
def test_bad_config_dates_are_refused(value):
    with pytest.raises(DataError, match="data.test_cutoff must be a date"):
        config_day(value, "data.test_cutoff")
