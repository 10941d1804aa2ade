"""Turn a predictions file into a retention plan with a control group (DESIGN section 7).

    python scripts/plan.py predictions=FILE.parquet|.csv [output=plan.parquet|.csv] \
        [retention.budget=5000] ['~data' | data=events data.path=LOG.csv \
        category_column=Category] [seed=0]

Writes the plan (one row per selected user), `<name>_profit_curve.png` and
`<name>_segments.csv` (churn rate and value per segment and cluster) beside it.
"""

from __future__ import annotations

import hydra
from _cli import exit_on_bad_input, run
from omegaconf import DictConfig, OmegaConf

from seqchurn.retention.jobs import run_plan


@hydra.main(version_base="1.3", config_path="../conf", config_name="plan")
@exit_on_bad_input(lambda cfg: cfg.paths.output_dir)
def main(cfg: DictConfig) -> None:
    data = cfg.get("data")  # absent with ~data: plan without the event log
    result = run_plan(
        predictions=cfg.predictions,
        output=cfg.output,
        retention=OmegaConf.to_container(cfg.retention, resolve=True),
        data=None if data is None else OmegaConf.to_container(data, resolve=True),
        seed=cfg.seed,
        category_column=cfg.category_column,
    )
    s = result.summary
    print(
        f"wrote {s['selected']} of {s['users']} users to {cfg.output} ({s['treated']} treated, "
        f"{s['control']} control; cost of the treated {s['cost_treated']:.2f}, expected profit "
        f"{s['expected_profit_treated']:.2f}, stopped by {s['stopped_by']})"
    )


if __name__ == "__main__":
    run(main)
