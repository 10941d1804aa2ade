"""Measure a campaign: churn rate and value, treated vs control, per tier and overall (DESIGN 7).

    python scripts/evaluate_campaign.py plan=PLAN.parquet [data=events data.path=LOG.csv] \
        [data.horizon_days=90] [data.obs_end=YYYY-MM-DD] [output=campaign.csv|.parquet] \
        [n_boot=2000] [seed=0]
"""

from __future__ import annotations

import hydra
from _cli import exit_on_bad_input, run
from omegaconf import DictConfig, OmegaConf

from seqchurn.retention.jobs import run_evaluation


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate_campaign")
@exit_on_bad_input(lambda cfg: cfg.paths.output_dir)
def main(cfg: DictConfig) -> None:
    report = run_evaluation(
        plan=cfg.plan,
        output=cfg.output,
        data=OmegaConf.to_container(cfg.data, resolve=True),
        n_boot=cfg.n_boot,
        level=cfg.level,
        seed=cfg.seed,
    )
    o = report.table.set_index("risk_tier").loc["overall"]
    print(
        f"treated {int(o.n_treated)} vs control {int(o.n_control)}: churn "
        f"{o.churn_treated:.3f} vs {o.churn_control:.3f}, difference {o.churn_diff:+.3f} "
        f"[{o.churn_diff_lo:+.3f}, {o.churn_diff_hi:+.3f}]; value per user {o.value_diff:+.2f} "
        f"[{o.value_diff_lo:+.2f}, {o.value_diff_hi:+.2f}]; net value {o.net_value:.2f} "
        f"[{o.net_value_lo:.2f}, {o.net_value_hi:.2f}] -> {cfg.output}"
    )


if __name__ == "__main__":
    run(main)
