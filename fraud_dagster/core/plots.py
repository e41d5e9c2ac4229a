"""Evaluation charts as PNG bytes, several models on one chart (e.g. challenger against champion).

Bytes, so the caller can both embed them in Dagster markdown metadata (base64) and log them to
MLflow. Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through
pyplot, so nothing is left open in pyplot's global state by a long-running Dagster process.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from sklearn import metrics as skm

from fraud_dagster.core.metrics import (
    DEFAULT_OBJECTIVE,
    ThresholdObjective,
    average_precision,
    cost_at_threshold,
    cost_curve,
    roc_auc,
)

Curves = Mapping[str, tuple[ArrayLike, ArrayLike]]
"""Label (``"challenger"``, ``"champion"``) -> (labels ``y``, fraud ``scores``)."""

FIGSIZE = (5, 4)
DPI = 100


def _new_figure(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Axes]:
    figure = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axes.grid(alpha=0.3)
    return figure, axes


def _png(figure: Figure, axes: Axes) -> bytes:
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def pr_curve_png(curves: Curves, target_precision: float | None = None) -> bytes:
    """Precision against recall for each model, its average precision in the legend.

    ``target_precision`` draws the precision the recall-at-precision metric is read at.
    """
    figure, axes = _new_figure("Precision-recall", "recall", "precision")
    for label, (y, scores) in curves.items():
        precision, recall, _ = skm.precision_recall_curve(y, scores)
        axes.step(recall, precision, where="post", label=f"{label} (AP {average_precision(y, scores):.3f})")
    if target_precision is not None:
        axes.axhline(target_precision, color="grey", linestyle=":", label=f"precision {target_precision:g}")
    axes.set(xlim=(0, 1), ylim=(0, 1.02))
    return _png(figure, axes)


def roc_curve_png(curves: Curves) -> bytes:
    """True against false positive rate for each model, its ROC AUC in the legend."""
    figure, axes = _new_figure("ROC", "false positive rate", "true positive rate")
    for label, (y, scores) in curves.items():
        false_positive_rate, true_positive_rate, _ = skm.roc_curve(y, scores)
        axes.plot(false_positive_rate, true_positive_rate, label=f"{label} (AUC {roc_auc(y, scores):.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axes.set(xlim=(0, 1), ylim=(0, 1.02))
    return _png(figure, axes)


def cost_curve_png(
    curves: Curves,
    thresholds: Mapping[str, float] | None = None,
    objective: ThresholdObjective = DEFAULT_OBJECTIVE,
) -> bytes:
    """Cost (``objective``'s prices) against the decision threshold for each model.

    ``thresholds`` maps a label to that model's chosen threshold, marked on its curve. The threshold
    axis is logarithmic above 0.001: cost-optimal thresholds of rare-fraud models sit near 0.
    """
    figure, axes = _new_figure("Cost by threshold", "threshold (alert if score >= threshold)", "cost")
    prices = objective.cost_missed_fraud, objective.cost_false_alarm
    chosen = thresholds or {}
    for label, (y, scores) in curves.items():
        points, costs = cost_curve(y, scores, *prices)
        legend = f"{label} (threshold {chosen[label]:.3g})" if label in chosen else label
        (line,) = axes.plot(points, costs, label=legend)
        if label in chosen:
            marker_cost = cost_at_threshold(y, scores, chosen[label], *prices)
            axes.plot([chosen[label]], [marker_cost], marker="o", color=line.get_color())
    axes.set_xscale("symlog", linthresh=1e-3)
    axes.set_xlim(0, 1)
    return _png(figure, axes)
