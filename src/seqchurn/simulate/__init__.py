"""Simulators with known answers: BG/NBD customers, the sequence process, treatment effects.

A simulated log reaches the DataModule as a raw events frame in the data contract, plus an
oracle: the Bayes-optimal churn probability of each user at a cutoff.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from seqchurn.simulate.bgnbd import bgnbd_oracle, simulate_bgnbd
from seqchurn.simulate.sequence_oracle import sequence_oracle
from seqchurn.simulate.sequence_process import SEQUENCE_PARAMS, simulate_sequence


@dataclass
class SimulatedLog:
    """Raw events (contract columns) and `oracle(cutoff_day, horizon_days)` -> user_id, p_churn_oracle."""

    events: pd.DataFrame
    oracle: Callable[[int, int], pd.DataFrame]


def bgnbd_log(**params) -> SimulatedLog:
    """Customers of a BG/NBD process (keyword arguments of `simulate_bgnbd`)."""
    simulated, _ = simulate_bgnbd(**params)
    oracle_params = {k: params[k] for k in ("r", "alpha", "a", "b", "start") if k in params}
    # Every simulated event is a purchase; its label becomes the event type the models see.
    labelled = simulated.assign(event_type=simulated.get("event_label", simulated["event_type"]))
    return SimulatedLog(
        events=labelled,
        oracle=lambda cutoff, horizon: bgnbd_oracle(simulated, cutoff, horizon, **oracle_params),
    )


def sequence_log(**params) -> SimulatedLog:
    """Customers of the sequence process (keyword arguments of `simulate_sequence`)."""
    simulated, _ = simulate_sequence(**params)
    # The oracle must score with the parameters that generated the data.
    oracle_params = {k: params[k] for k in (*SEQUENCE_PARAMS, "start") if k in params}
    return SimulatedLog(
        events=simulated,
        oracle=lambda cutoff, horizon: sequence_oracle(simulated, cutoff, horizon, **oracle_params),
    )
