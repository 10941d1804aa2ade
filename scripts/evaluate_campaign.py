"""Measure a campaign: churn rate and value, treated vs control, per tier and overall (DESIGN section 7).

    python scripts/evaluate_campaign.py plan=PLAN.parquet [events.source=events events.path=LOG.csv] \
        [horizon_days=90] [obs_end=YYYY-MM-DD] [output=campaign.csv|.parquet] [n_boot=2000] [seed=0]
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from _cli import exit_on_bad_input
from seqchurn.data.events import load_events, read_table
from seqchurn.data.labels import to_day
from seqchurn.retention.campaign import CampaignReport, evaluate_campaign
from seqchurn.retention.plan import write_table


def run_evaluation(cfg: DictConfig) -> CampaignReport:
    """Read the plan and the events, evaluate, write the table; DataError before anything is written."""
    plan = read_table(cfg.plan)
    if "user_id" in plan.columns:
        plan["user_id"] = plan["user_id"].astype(str)
    ev = cfg.events
    events, _ = load_events(
        ev.source,
        ev.get("path"),
        dict(ev.get("columns") or {}),
        ev.get("on_bad_rows", "raise"),
        bool(ev.get("merge_same_day", False)),
    )
    types = cfg.get("activity_event_types")
    report = evaluate_campaign(
        plan,
        events,
        horizon_days=int(cfg.horizon_days),
        n_boot=int(cfg.n_boot),
        seed=int(cfg.seed),
        level=float(cfg.level),
        obs_end=to_day(cfg.obs_end) if cfg.get("obs_end") else None,
        activity_event_types=OmegaConf.to_container(types) if types is not None else None,
    )
    write_table(report.table, cfg.output)
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate_campaign")
@exit_on_bad_input(lambda cfg: cfg.paths.output_dir)
def main(cfg: DictConfig) -> None:
    report = run_evaluation(cfg)
    o = report.table.set_index("risk_tier").loc["overall"]
    print(
        f"treated {int(o.n_treated)} vs control {int(o.n_control)}: churn {o.churn_treated:.3f} vs {o.churn_control:.3f}, "
        f"difference {o.churn_diff:+.3f} [{o.churn_diff_lo:+.3f}, {o.churn_diff_hi:+.3f}]; value per user "
        f"{o.value_diff:+.2f} [{o.value_diff_lo:+.2f}, {o.value_diff_hi:+.2f}]; net value {o.net_value:.2f} "
        f"[{o.net_value_lo:.2f}, {o.net_value_hi:.2f}] -> {cfg.output}"
    )


if __name__ == "__main__":
    main()
