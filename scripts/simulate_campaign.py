"""Synthetic BG/NBD customers with a known campaign effect, to check scripts/evaluate_campaign.py.

    python scripts/simulate_campaign.py history --out history.csv            # the log up to the plan date
    python scripts/simulate_campaign.py outcome --plan plan.parquet --out after.csv   # + the window, treated or not

Both steps regenerate the same customers (`data=synthetic` settings, `--n-users`, `--seed`).
`outcome` continues each customer's process after the plan date in two worlds from the same
draws; a treated customer (group "treated" in the plan) who had dropped out comes back with the
acceptance of their planned action. It prints the true average effect on the treated, which the
evaluation's interval should cover.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from seqchurn.data.events import read_table
from seqchurn.data.labels import to_day
from seqchurn.data.synthetic import simulate_bgnbd
from seqchurn.data.treatment import EVENT_COLUMNS, observed_events, simulate_potential_outcomes, true_effect
from seqchurn.errors import DataError
from seqchurn.io import atomic_write

ROOT = Path(__file__).resolve().parents[1]


def _customers(n_users: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    params = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "data" / "synthetic.yaml").synthetic)
    params.update(n_users=n_users, seed=seed)
    events, truth = simulate_bgnbd(**params)
    return events, truth, params


def _write_csv(frame: pd.DataFrame, out: Path) -> None:
    atomic_write(out, lambda tmp: frame.to_csv(tmp, index=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("history", "outcome"))
    parser.add_argument("--out", required=True, type=Path, help="CSV event log to write")
    parser.add_argument("--plan", type=Path, help="scripts/plan.py's output (outcome step)")
    parser.add_argument("--cutoff", default="2021-03-31", help="the plan date (default: data=synthetic's test cutoff)")
    parser.add_argument("--horizon-days", type=int, default=90)
    parser.add_argument("--n-users", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0, help="seed of the customers")
    parser.add_argument("--outcome-seed", type=int, default=1, help="seed of the window after the plan date")
    parser.add_argument("--acceptance", default=None,
                        help='JSON {action: acceptance}; default: the acceptance of conf/retention/default.yaml')
    args = parser.parse_args(argv)
    try:
        events, truth, params = _customers(args.n_users, args.seed)
        c = to_day(args.cutoff)
        if args.step == "history":
            hist = events.loc[events["timestamp"] < pd.Timestamp(args.cutoff) + pd.Timedelta(days=1), list(EVENT_COLUMNS)]
            _write_csv(hist, args.out)
            print(f"{len(hist)} events of {hist['user_id'].nunique()} customers up to {args.cutoff} -> {args.out}")
            return 0
        if args.plan is None:
            raise DataError("the outcome step needs --plan PLAN.parquet")
        plan = read_table(args.plan)
        if not {"user_id", "group", "planned_action"} <= set(plan.columns):
            raise DataError(f"{args.plan} is not a plan: it lacks user_id, group or planned_action")
        plan["user_id"] = plan["user_id"].astype(str)
        if args.acceptance:
            acceptance = json.loads(args.acceptance)
        else:
            actions = OmegaConf.load(ROOT / "conf" / "retention" / "default.yaml").actions
            acceptance = {k: float(v.acceptance) for k, v in actions.items()}
        rescue = plan.set_index("user_id")["planned_action"].map(acceptance).fillna(0.0)
        outcomes, post = simulate_potential_outcomes(
            events, truth, c, args.horizon_days, rescue_prob=rescue, seed=args.outcome_seed, start=params["start"]
        )
        treated = plan.loc[plan["group"] == "treated", "user_id"]
        effect = true_effect(outcomes, treated)
        _write_csv(observed_events(events, post, c, treated), args.out)
        print(
            f"true effect on the {effect['n_treated']} treated: churn {effect['churn']:+.4f}, "
            f"window value per user {effect['value']:+.2f}, saved value {effect['saved_value']:.2f} -> {args.out}"
        )
        return 0
    except (DataError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
