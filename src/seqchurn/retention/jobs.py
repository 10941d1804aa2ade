"""The plain functions behind scripts/plan.py and scripts/evaluate_campaign.py.

Each reads, computes and writes.

Each takes plain values and whole config nodes as mappings (`data` is a conf/data/*.yaml
node, `retention` conf/retention/default.yaml), reads every input before it writes
anything, and raises DataError on bad input.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from seqchurn.data.timestamps import config_day
from seqchurn.io import (
    check_outputs,
    together,
    read_data_events,
    read_predictions,
    read_user_table,
    write_table,
)
from seqchurn.retention.campaign import CampaignReport, evaluate_campaign
from seqchurn.retention.plan import PREDICTION_COLUMNS, Plan, check_settings, make_plan
from seqchurn.retention.report import (
    curve_path,
    plot_profit_curve,
    segments_path,
    segments_report,
)


def run_plan(
    predictions: str | Path,
    output: str | Path,
    retention: Mapping,
    data: Mapping | None,
    seed: int,
    category_column: str | None = None,
) -> Plan:
    """Plan a predictions file; writes the plan, its profit curve and its segment table.

    Args:
        predictions: scripts/predict.py's output (Parquet or CSV).
        output: the plan file (.parquet, or .csv); the other two go beside it.
        retention: the keyword arguments of `make_plan` (conf/retention/default.yaml).
        data: the event log read for recommendations; None plans without it.
        seed: seed of the control group.
        category_column: a column of the log holding the item or category to recommend.
    """
    data_path = None if data is None else data.get("path")
    check_outputs([output, segments_path(output)], [predictions, data_path])
    check_settings(retention["budget"], retention["waste"], retention["control_share"])
    pred = read_predictions(predictions, PREDICTION_COLUMNS)
    events = None if data is None else read_data_events(data, category_column)
    result = make_plan(pred, **retention, seed=seed, events=events)
    report = segments_report(pred)
    with together():
        plot_profit_curve(result.curve, curve_path(output))
        if report is not None:
            write_table(report, segments_path(output))
        write_table(result.plan, output)
    return result


def run_evaluation(
    plan: str | Path, output: str | Path, data: Mapping, n_boot: int, level: float, seed: int
) -> CampaignReport:
    """Evaluate a plan against the events after it; writes the table of `evaluate_campaign`.

    Args:
        plan: scripts/plan.py's output.
        output: the table (.csv, or .parquet).
        data: the event log covering the plan date + `data.horizon_days`; its
            `activity_event_types` and `obs_end` apply.
        n_boot, level, seed: the bootstrap intervals.
    """
    check_outputs([output], [plan, data.get("path")])
    frame = read_user_table(plan, what="the plan")
    events = read_data_events(data)
    report = evaluate_campaign(
        frame,
        events,
        horizon_days=data["horizon_days"],
        n_boot=n_boot,
        seed=seed,
        level=level,
        obs_end=config_day(data["obs_end"], "data.obs_end") if data["obs_end"] else None,
        activity_event_types=data["activity_event_types"],
    )
    write_table(report.table, output)
    return report
