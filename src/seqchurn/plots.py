"""Every figure of seqchurn, drawn through one idiom: `figure()` to make it, `save()` to write it.

`matplotlib.figure.Figure` is used directly, never pyplot: pyplot would switch the global
backend of whatever program imports seqchurn (a notebook, a server) and keep every figure
alive until it is closed. `save` writes atomically, so a reader never sees half a PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from seqchurn.io import write_png
from seqchurn.metrics import auroc, average_precision, check_labels, check_scores

DPI = 110
PANEL = (5.5, 5.0)  # inches per panel: one size, so figures side by side in a report match


def figure(
    ncols: int = 1,
    panel: tuple[float, float] = PANEL,
    width_ratios: Sequence[float] | None = None,
) -> tuple[Figure, np.ndarray]:
    """A figure of `ncols` panels in one row, with constrained layout.

    Args:
        ncols: number of panels.
        panel: (width, height) in inches of one panel; the figure is ncols times as wide.
        width_ratios: relative panel widths, as matplotlib's gridspec takes them.

    Returns:
        The figure and a (ncols,) array of its axes.
    """
    fig = Figure(figsize=(panel[0] * ncols, panel[1]), layout="constrained")
    gridspec = None if width_ratios is None else {"width_ratios": list(width_ratios)}
    return fig, fig.subplots(1, ncols, squeeze=False, gridspec_kw=gridspec)[0]


def save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG at `path`, atomically; returns the path."""
    return write_png(fig, path, dpi=DPI)


def reliability_plot(y: np.ndarray, preds: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Observed churn rate against mean p_churn in deciles of each method's p (equal-count bins)."""
    y = check_labels(y)
    fig, (ax,) = figure()
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
    for name, p in preds.items():
        p = check_scores(name, p, n=len(y), what="p_churn", unit=True)
        bins = np.array_split(np.argsort(p, kind="stable"), min(10, len(p)))
        ax.plot(
            [p[b].mean() for b in bins],
            [y[b].mean() for b in bins],
            marker="o",
            ms=4,
            lw=1.2,
            label=name,
        )
    ax.set(
        xlabel="mean predicted p_churn (decile)",
        ylabel="observed churn rate",
        xlim=(0, 1),
        ylim=(0, 1),
        title="Reliability",
    )
    ax.legend(fontsize=7, loc="upper left")
    return save(fig, path)


def roc_pr_plots(y: np.ndarray, preds: Mapping[str, np.ndarray], prefix: str) -> None:
    """`{prefix}_roc.png` (ROC) and `{prefix}_pr.png` (precision-recall, churners and returners)."""
    y = check_labels(y)
    checked = {
        name: check_scores(name, p, n=len(y), what="p_churn", unit=True)
        for name, p in preds.items()
    }
    fig, (ax,) = figure()
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    for name, p in checked.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, lw=1.2, label=f"{name} ({auroc(p, y):.3f})")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (AUROC)")
    ax.legend(fontsize=7, loc="lower right")
    save(fig, f"{prefix}_roc.png")

    fig, axes = figure(2)
    for ax, (label, target, flip) in zip(
        axes, (("churners", y, False), ("returners", 1 - y, True))
    ):
        ax.axhline(target.mean(), color="grey", lw=1, ls="--")
        for name, p in checked.items():
            score = 1 - p if flip else p
            precision, recall, _ = precision_recall_curve(target, score)
            ax.plot(
                recall,
                precision,
                lw=1.2,
                label=f"{name} ({average_precision(score, target):.3f})",
            )
        ax.set(
            xlabel="recall",
            ylabel="precision",
            ylim=(0, 1.02),
            title=f"Precision-recall, {label} (AP)",
        )
        ax.legend(fontsize=7, loc="lower left")
    save(fig, f"{prefix}_pr.png")


def plot_global(
    results: Sequence, path: str | Path, top_n: int = 20, max_positions: int = 50
) -> Path:
    """Mean |attribution| per input and per event position (latest = 0), from ExplainResults."""
    from matplotlib.ticker import MaxNLocator

    # Imported here: seqchurn.explain pulls in torch and captum, which no other plot needs.
    from seqchurn.explain import global_attribution

    per_channel, per_position = global_attribution(list(results))
    top = per_channel.head(top_n)[::-1]
    fig, (ax1, ax2) = figure(2, panel=(5.5, max(4, 0.3 * len(top) + 1.5)), width_ratios=(1.2, 1))
    ax1.barh(top.index, top["mean_abs"], color="tab:red")
    ax1.set(xlabel="mean |attribution| to the churn logit", title="per input")
    pos = per_position[:max_positions]
    ax2.bar(np.arange(len(pos)), pos, color="tab:gray")
    ax2.set(
        xlabel="events back from the most recent (0 = latest)",
        ylabel="mean |attribution|",
        title="per event position",
    )
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    methods = ", ".join(sorted({r.method for r in results}))
    users = sum(len(r.channel_attr) for r in results)
    fig.suptitle(f"global attribution of p_churn ({methods}, {users} users)")
    return save(fig, path)
