"""What goes beside a plan: the profit curve figure and churn rate and value per segment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from seqchurn.plots import figure, save
from seqchurn.retention.segments import segment_table


def curve_path(output: str | Path) -> Path:
    """Where the profit curve goes: beside the plan, `<name>_profit_curve.png`."""
    output = Path(output)
    return output.with_name(f"{output.stem}_profit_curve.png")


def segments_path(output: str | Path) -> Path:
    """Where the segment table goes: beside the plan, `<name>_segments.csv`."""
    output = Path(output)
    return output.with_name(f"{output.stem}_segments.csv")


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


def plot_profit_curve(curve: pd.DataFrame, path: str | Path) -> Path:
    """Cumulative expected profit against the share of users targeted, the cut marked; PNG."""
    fig, (ax,) = figure(panel=(6.0, 4.0))
    # The curve starts at the origin: targeting nobody costs and earns nothing.
    x = np.concatenate([[0.0], curve["share_targeted"].to_numpy()])
    y = np.concatenate([[0.0], curve["cum_profit"].to_numpy()])
    ax.plot(x, y, color="tab:blue", label="ranked by expected profit")
    n_sel = int(curve["selected"].sum())
    ax.axvline(x[n_sel], color="tab:red", linestyle="--", label=f"cut: {n_sel} users")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set(xlabel="share of users targeted", ylabel="cumulative expected profit")
    ax.legend(loc="best")
    return save(fig, path)
