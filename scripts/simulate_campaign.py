"""Synthetic BG/NBD customers with a known campaign effect, to check scripts/evaluate_campaign.py.

    python scripts/simulate_campaign.py step=history out=history.csv   # the log up to the plan date
    python scripts/simulate_campaign.py step=outcome plan=plan.parquet out=after.csv   # + window

Both steps regenerate the same customers (`data=synthetic`: data.synthetic.n_users=...,
data.synthetic.seed=...). `outcome` continues each customer's process after the plan date in
two worlds from the same draws; a treated customer (group "treated" in the plan) who had
dropped out comes back with the acceptance of their planned action (retention.actions). It
prints the true average effect on the treated, which the evaluation's interval should cover.
"""

from __future__ import annotations

import hydra
from _cli import exit_on_bad_input, run
from omegaconf import DictConfig, OmegaConf

from seqchurn.simulate.treatment import simulate_campaign


@hydra.main(version_base="1.3", config_path="../conf", config_name="simulate_campaign")
@exit_on_bad_input(lambda cfg: cfg.paths.output_dir)
def main(cfg: DictConfig) -> None:
    line = simulate_campaign(
        step=cfg.step,
        out=cfg.out,
        customers=OmegaConf.to_container(cfg.data.synthetic, resolve=True),
        actions=OmegaConf.to_container(cfg.retention.actions, resolve=True),
        cutoff=cfg.cutoff,
        horizon_days=cfg.horizon_days,
        outcome_seed=cfg.outcome_seed,
        plan=cfg.plan,
    )
    print(line)


if __name__ == "__main__":
    run(main)
