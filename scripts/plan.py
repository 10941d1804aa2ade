"""Turn a predictions file into a retention plan with a control group (DESIGN section 7).

    python scripts/plan.py predictions=FILE.parquet|.csv [output=plan.parquet|.csv] \
        [retention.budget=5000] [events=null | events.source=events events.path=LOG.csv \
        events.category_column=Category] [seed=0]

Writes the plan (one row per selected user), `<name>_profit_curve.png` and
`<name>_segments.csv` (churn rate and value per segment and cluster) beside it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from _cli import exit_on_bad_input
from seqchurn.retention.plan import (
    Plan,
    curve_path,
    load_category_events,
    make_plan,
    plot_profit_curve,
    read_predictions,
    write_table,
)
from seqchurn.retention.segments import segment_table

log = logging.getLogger("seqchurn.plan")


def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) or OmegaConf.is_list(node) else node


def segments_report(predictions: pd.DataFrame) -> pd.DataFrame | None:
    """Expected churn rate and value at risk per segment and per cluster, when the file has them."""
    parts = []
    for by in ("segment", "cluster"):
        if by in predictions.columns:
            t = segment_table(predictions, by=by).rename(columns={by: "name"})
            parts.append(t.assign(name=t["name"].astype(str)).assign(by=by))
    if not parts:
        return None
    out = pd.concat(parts, ignore_index=True)
    return out[["by", *[c for c in out.columns if c != "by"]]]


def run_plan(cfg: DictConfig) -> Plan:
    """Read, plan and write; returns the Plan. Bad input raises DataError before anything is written."""
    predictions = read_predictions(cfg.predictions)
    events = None
    if cfg.get("events") is not None:
        ev = _plain(cfg.events)
        events = load_category_events(
            source=ev.get("source", "cdnow"),
            path=ev.get("path"),
            columns=ev.get("columns") or {},
            category_column=ev.get("category_column"),
            activity_event_types=ev.get("activity_event_types"),
            merge_same_day=bool(ev.get("merge_same_day", False)),
            on_bad_rows=ev.get("on_bad_rows", "raise"),
        )
    r = cfg.retention
    result = make_plan(
        predictions,
        actions=_plain(r.actions),
        rules=_plain(r.rules),
        budget=r.get("budget"),
        waste=float(r.waste),
        control_share=float(r.control_share),
        seed=int(cfg.seed),
        intervene_default_days=int(r.intervene_default_days),
        events=events,
        tiers=_plain(r.tiers),
    )
    output = Path(cfg.output)
    report = segments_report(predictions)
    plot_profit_curve(result.curve, curve_path(output))
    if report is not None:
        write_table(report, output.with_name(f"{output.stem}_segments.csv"))
    write_table(result.plan, output)
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="plan")
@exit_on_bad_input(lambda cfg: cfg.paths.output_dir)
def main(cfg: DictConfig) -> None:
    result = run_plan(cfg)
    s = result.summary
    print(
        f"wrote {s['selected']} of {s['users']} users to {cfg.output} ({s['treated']} treated, {s['control']} control; "
        f"cost of the treated {s['cost_treated']:.2f}, expected profit {s['expected_profit_treated']:.2f}, "
        f"stopped by {s['stopped_by']})"
    )


if __name__ == "__main__":
    main()
