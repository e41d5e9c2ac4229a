"""Metrics for fraud scores: ranking quality, the Handbook's card precision top-k, costs, thresholds.

The same functions serve model selection and threshold choice in training, the champion against
challenger comparison in ``model_evaluation`` and, per day, drift monitoring, so a number means the
same thing wherever it is shown. Labels ``y`` are 0/1 (1 = fraud), ``scores`` are fraud
probabilities; a *scored* frame has at least ``tx_datetime``, ``customer_id``, ``tx_fraud`` and
``score``. A metric that is undefined on its input (AUC on a single class, recall without frauds,
precision without alerts) is ``float("nan")``, never an error or a made-up 0, so a quiet day cannot
stop a run; the per-day table shows it as null. Nothing here knows about Dagster or BentoML.
scikit-learn's metrics are imported in the functions that use them, not with the module, which
the Dagster definitions import (every run's and step's process loads them: 1-1.5 s less).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Literal

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

_DAY = pl.col("tx_datetime").dt.date().alias("day")


def _labels_and_scores(y: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    given = np.asarray(y, dtype=np.float64).ravel()
    if not np.isin(given, (0.0, 1.0)).all():
        # A null (unknown) label read as NaN would otherwise be cast to an arbitrary integer.
        raise ValueError("labels must be 0 or 1 (leave unknown labels out)")
    labels = given.astype(np.int8)
    values = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != values.shape:
        raise ValueError(f"{labels.size} labels but {values.size} scores")
    if not np.isfinite(values).all():
        raise ValueError("scores must be finite")
    return labels, values


def _both_classes(labels: np.ndarray) -> bool:
    return 0 < labels.sum() < labels.size


def average_precision(y: ArrayLike, scores: ArrayLike) -> float:
    """Area under the precision-recall curve (sklearn's step-wise AP); NaN unless both classes occur.

    The threshold-free metric to rank models on when frauds are rare, where ROC AUC flatters.
    """
    from sklearn import metrics as skm

    labels, values = _labels_and_scores(y, scores)
    if not _both_classes(labels):
        return math.nan
    return float(skm.average_precision_score(labels, values))


def roc_auc(y: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve; NaN unless both classes occur."""
    from sklearn import metrics as skm

    labels, values = _labels_and_scores(y, scores)
    if not _both_classes(labels):
        return math.nan
    return float(skm.roc_auc_score(labels, values))


KnownCompromised = Mapping[dt.date, Collection[int]]
"""Per day, the cards (``customer_id``) already known to be compromised on that day."""


def known_compromised_cards(
    labels: pl.DataFrame, days: Sequence[dt.date], delay_days: int, since: dt.date
) -> dict[dt.date, frozenset[int]]:
    """For each of ``days``, the cards with a fraud the fraud team knows of by that day.

    The Fraud Detection Handbook's rule (``get_train_test_set`` and ``get_train_delay_test_set`` in
    its ``shared_functions``): a fraud on day d is known from day ``d + delay_days + 1`` on, and
    only frauds from ``since`` (the first day of the training window) count. So on test day T a
    card is known compromised when it has a fraudulent transaction (``tx_fraud == 1`` in
    ``labels``: ``tx_datetime``, ``customer_id``, ``tx_fraud``) on a day in
    ``since .. T - delay_days - 1``: with 7 train, 7 delay and 7 test days, the first test day knows
    the training week's frauds, and each later test day adds one more day of the delay week (the
    delay week's last day is never added). Days before ``since + delay_days + 1`` know nothing.

    A fraud team blocks those cards, so they are not scored: ``without_known_compromised`` drops
    them. The set comes from labels, not from scores, so it is the same for every model.
    """
    if delay_days < 0:
        raise ValueError(f"delay_days must be at least 0, not {delay_days}")
    frauds = (
        labels.filter(pl.col("tx_fraud") == 1)
        .select(_DAY, "customer_id")
        .filter(pl.col("day") >= since)
        .group_by("customer_id")
        .agg(pl.col("day").min().alias("first_fraud"))
    )
    first = dict(zip(frauds["customer_id"].to_list(), frauds["first_fraud"].to_list()))
    known = {}
    for day in days:
        last = day - dt.timedelta(days=delay_days + 1)
        known[day] = frozenset(card for card, fraud_day in first.items() if fraud_day <= last)
    return known


def without_known_compromised(frame: pl.DataFrame, known: KnownCompromised) -> pl.DataFrame:
    """``frame`` without, on each day, the rows of the cards known compromised that day.

    Days that ``known`` does not name keep all their rows. Row order is kept.
    """
    pairs = [(day, card) for day, cards in known.items() for card in cards]
    if not pairs:
        return frame
    blocked = pl.DataFrame(
        {"__day": [day for day, _ in pairs], "customer_id": [card for _, card in pairs]},
        schema={"__day": pl.Date, "customer_id": frame.schema["customer_id"]},
    )
    return frame.join(
        blocked,
        left_on=[pl.col("tx_datetime").dt.date(), pl.col("customer_id")],
        right_on=["__day", "customer_id"],
        how="anti",
        maintain_order="left",
    )


def card_precision_at_k_per_day(
    scored: pl.DataFrame, k: int = 100, known_compromised: KnownCompromised | None = None
) -> pl.DataFrame:
    """The Handbook's card precision top-k for each day of ``scored``, in day order.

    Investigators can check ``k`` cards a day, so the useful question is how many of the ``k`` most
    suspicious cards of a day are compromised. This follows ``card_precision_top_k`` and
    ``card_precision_top_k_day`` of the Fraud Detection Handbook (Le Borgne et al., chapter 4,
    "Precision top-k metrics"). For each day, in day order:

    1. the cards of ``known_compromised[day]`` are dropped (cards the fraud team already knows
       and has blocked: ``known_compromised_cards`` gives the Handbook's rule; the Handbook drops
       them when it builds its test set, ``get_train_test_set``);
    2. cards found compromised on earlier days of ``scored`` (fraudulent cards in an earlier day's
       top k) are dropped (the Handbook's default ``remove_detected_compromised_cards=True``);
    3. each remaining card gets its highest transaction score of the day and is fraudulent if
       any of its transactions that day is; the ``k`` highest-scored cards are alerted and the
       day's precision is their fraudulent count / k (still / k when fewer than k cards are left;
       a day whose cards were all dropped scores 0).

    Without ``known_compromised`` only step 2 drops cards. Deliberate difference: cards with equal
    scores are ordered by ``customer_id`` (the Handbook's unstable pandas sort leaves that order
    unspecified), so the result is deterministic.

    Columns: ``day``, ``known_cards`` (cards of the day dropped in step 1), ``cards`` (cards still
    in the running), ``compromised_cards`` (fraudulent among them, the Handbook's
    ``nb_compromised_cards_per_day``), ``detected_cards`` (fraudulent among the top k) and
    ``card_precision_at_k``.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    cards = (
        scored.group_by(_DAY, "customer_id")
        .agg(pl.col("score").max(), pl.col("tx_fraud").max().cast(pl.Int8).alias("fraud"))
        .sort("day", "score", "customer_id", descending=[False, True, False])
    )
    rows = []
    detected = pl.Series("customer_id", [], dtype=pl.Int64)
    for day, day_cards in cards.partition_by("day", as_dict=True, maintain_order=True).items():
        blocked = pl.Series("customer_id", sorted((known_compromised or {}).get(day[0], ())),
                            dtype=pl.Int64)
        is_known = pl.col("customer_id").is_in(blocked.implode())
        candidates = day_cards.filter(~is_known & ~pl.col("customer_id").is_in(detected.implode()))
        alerted_frauds = candidates.head(k).filter(pl.col("fraud") == 1)["customer_id"]
        rows.append(
            {
                "day": day[0],
                "known_cards": day_cards.filter(is_known).height,
                "cards": candidates.height,
                "compromised_cards": int(candidates["fraud"].sum()),
                "detected_cards": alerted_frauds.len(),
                "card_precision_at_k": alerted_frauds.len() / k,
            }
        )
        detected = detected.append(alerted_frauds)
    schema = {
        "day": pl.Date,
        "known_cards": pl.Int64,
        "cards": pl.Int64,
        "compromised_cards": pl.Int64,
        "detected_cards": pl.Int64,
        "card_precision_at_k": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


def card_precision_at_k(
    scored: pl.DataFrame, k: int = 100, known_compromised: KnownCompromised | None = None
) -> float:
    """Mean over the days of ``scored`` of the daily card precision top-k; NaN without rows."""
    daily = card_precision_at_k_per_day(scored, k, known_compromised)["card_precision_at_k"]
    return math.nan if daily.is_empty() else float(daily.mean())


def recall_at_precision(
    y: ArrayLike, scores: ArrayLike, precision: float = 0.9
) -> tuple[float, float | None]:
    """The highest recall whose alerts (``score >= threshold``) keep at least ``precision``.

    Answers "how much fraud do we catch if at most 1 - precision of alerts may be false". Returns
    ``(recall, threshold)``; among thresholds reaching that recall the highest (fewest alerts).
    ``(0.0, None)`` when no threshold reaches the precision, ``(nan, None)`` when ``y`` has no fraud.
    """
    from sklearn import metrics as skm

    labels, values = _labels_and_scores(y, scores)
    if labels.sum() == 0:
        return math.nan, None
    precisions, recalls, thresholds = skm.precision_recall_curve(labels, values)
    # The curve's last point (precision 1, recall 0) has no threshold: it is "alert on nothing".
    feasible = np.flatnonzero(precisions[:-1] >= precision)
    if feasible.size == 0:
        return 0.0, None
    best = recalls[feasible].max()
    index = feasible[recalls[feasible] == best].max()
    return float(best), float(thresholds[index])


def cost_at_threshold(
    y: ArrayLike,
    scores: ArrayLike,
    threshold: float,
    cost_missed_fraud: float,
    cost_false_alarm: float,
) -> float:
    """Total cost of alerting on ``score >= threshold``: missed frauds and false alarms, each priced.

    A total over the rows given, not a mean, so it reads as money lost on that window.
    """
    from sklearn import metrics as skm

    labels, values = _labels_and_scores(y, scores)
    confusion = skm.confusion_matrix(labels, values >= threshold, labels=[0, 1])
    _, false_alarms, missed, _ = confusion.ravel()
    return float(cost_missed_fraud * missed + cost_false_alarm * false_alarms)


def cost_curve(
    y: ArrayLike, scores: ArrayLike, cost_missed_fraud: float, cost_false_alarm: float
) -> tuple[np.ndarray, np.ndarray]:
    """``cost_at_threshold`` at every distinct score as threshold: ``(thresholds ascending, costs)``.

    One sort and cumulative sums instead of a pass per threshold, so it is cheap on a whole
    validation window. "Alert on nothing" is not a point of the curve.
    """
    labels, values = _labels_and_scores(y, scores)
    order = np.argsort(-values, kind="stable")
    descending, frauds = values[order], labels[order].astype(bool)
    caught, false_alarms = np.cumsum(frauds), np.cumsum(~frauds)
    # At a threshold equal to a score, every row with that score is alerted: keep each tie's last row.
    last_of_tie = np.append(descending[1:] != descending[:-1], True)
    missed = frauds.sum() - caught[last_of_tie]
    costs = cost_missed_fraud * missed + cost_false_alarm * false_alarms[last_of_tie]
    return descending[last_of_tie][::-1], costs[::-1].astype(np.float64)


@dataclasses.dataclass(frozen=True)
class ThresholdObjective:
    """What the decision threshold is chosen for, and the prices the cost metrics use.

    ``kind="cost"`` (default) minimises ``cost_at_threshold``; ``"recall_at_precision"`` takes the
    threshold of ``recall_at_precision(target_precision)``. Defaults: a missed fraud costs 100 (about
    a fraudulent purchase in the simulator, where most frauds are amounts over 220 or five times a
    card's usual ~50, less what is recovered, plus the chargeback's handling) and a false alarm 2 (a
    few minutes of an investigator's call and a customer's annoyance). With calibrated probabilities
    the cheapest threshold is then near 2 / (2 + 100) ~ 0.02: alerting is worth it from a 2 % chance
    of fraud. ``target_precision`` 0.9: nine in ten alerts should be real frauds.

    ``"alert_budget"``: the investigators can check ``daily_cards`` cards a day (default 100, the
    ``k`` of card precision@k), so the threshold is the lowest at which no validation day flags
    more than ``daily_cards`` cards (``alert_budget_threshold``).
    """

    kind: Literal["cost", "recall_at_precision", "alert_budget"] = "cost"
    cost_missed_fraud: float = 100.0
    cost_false_alarm: float = 2.0
    target_precision: float = 0.9
    daily_cards: int = 100

    def __post_init__(self) -> None:
        if self.kind not in ("cost", "recall_at_precision", "alert_budget"):
            raise ValueError(f"unknown objective kind {self.kind!r}")
        if self.daily_cards < 1:
            raise ValueError("daily_cards must be at least 1")
        if self.cost_missed_fraud < 0 or self.cost_false_alarm < 0:
            raise ValueError("costs must be non-negative")
        if not 0 < self.target_precision <= 1:
            raise ValueError("target_precision must be in (0, 1]")


DEFAULT_OBJECTIVE = ThresholdObjective()


def alert_budget_threshold(
    scores: ArrayLike, days: ArrayLike, cards: ArrayLike, daily_cards: int
) -> float:
    """The lowest threshold at which no day flags more than ``daily_cards`` cards.

    A card is flagged on a day when one of its transactions of that day scores ``>= threshold``;
    ``days`` and ``cards`` (``customer_id``) name each score's day and card. On a day with more
    than ``daily_cards`` cards, the threshold must be above its (``daily_cards`` + 1)-th highest
    card score; the answer is the lowest score above that bound on every day (the capacity holds
    on the worst day, not on average). When no day has more cards than the budget, it is the
    lowest score (everything is flagged). When ties leave no score above the bound, it is just
    above the highest score: nothing is flagged.
    """
    if daily_cards < 1:
        raise ValueError(f"daily_cards must be at least 1, got {daily_cards}")
    values = np.asarray(scores, dtype=np.float64).ravel()
    frame = pl.DataFrame({"day": np.asarray(days).ravel(), "card": np.asarray(cards).ravel(),
                          "score": values})
    if frame.height == 0:
        raise ValueError("an alert budget threshold needs scores")
    if not np.isfinite(values).all():
        raise ValueError("scores must be finite")
    bound = (
        frame.group_by("day", "card").agg(pl.col("score").max())
        .group_by("day").agg(pl.col("score").sort(descending=True).slice(daily_cards, 1).first())
        ["score"].max()
    )
    if bound is None:
        return float(values.min())
    above = values[values > bound]
    return float(above.min()) if above.size else float(np.nextafter(values.max(), np.inf))


def choose_threshold(
    y: ArrayLike,
    scores: ArrayLike,
    objective: ThresholdObjective,
    days: ArrayLike | None = None,
    cards: ArrayLike | None = None,
) -> float:
    """The decision threshold (alert on ``score >= threshold``) that best meets ``objective``.

    One of the scores (but for the edge case of ``alert_budget_threshold``). Ties go to the
    highest threshold, the one with fewest alerts. For ``"recall_at_precision"``, when the target
    precision is never reached, the threshold of the highest precision achieved (then of the
    highest recall) is taken: the nearest the model comes; without any fraud in ``y`` there is no
    such threshold and it raises ``ValueError``. ``"alert_budget"`` needs each score's ``days``
    and ``cards``.
    """
    from sklearn import metrics as skm

    labels, values = _labels_and_scores(y, scores)
    if objective.kind == "alert_budget":
        if days is None or cards is None:
            raise ValueError("the alert_budget objective needs the days and cards of the scores")
        return alert_budget_threshold(values, days, cards, objective.daily_cards)
    if objective.kind == "cost":
        prices = objective.cost_missed_fraud, objective.cost_false_alarm
        thresholds, costs = cost_curve(labels, values, *prices)
        return float(thresholds[np.flatnonzero(costs == costs.min()).max()])
    if labels.sum() == 0:
        raise ValueError("a threshold for recall cannot be chosen without frauds")
    _, threshold = recall_at_precision(labels, values, objective.target_precision)
    if threshold is not None:
        return threshold
    precisions, recalls, thresholds = skm.precision_recall_curve(labels, values)
    # lexsort's last key is the primary one: precision first, then recall, then the threshold itself.
    return float(thresholds[np.lexsort((thresholds, recalls[:-1], precisions[:-1]))[-1]])


def evaluation_metrics(
    scored: pl.DataFrame,
    threshold: float,
    objective: ThresholdObjective = DEFAULT_OBJECTIVE,
    k: int = 100,
) -> dict[str, float]:
    """The headline metrics of ``scored`` with alerts on ``score >= threshold``, named for logging.

    Keys: ``average_precision``, ``roc_auc``, ``card_precision_at_<k>``,
    ``recall_at_<100 * target precision>_precision``, ``cost`` (``cost_at_threshold`` with the
    objective's prices), ``precision``, ``recall``, ``alerts``, ``n_transactions``, ``n_frauds``.
    """
    from sklearn import metrics as skm

    y, scores = scored["tx_fraud"].to_numpy(), scored["score"].to_numpy()
    alerts = scores >= threshold
    prices = objective.cost_missed_fraud, objective.cost_false_alarm
    recall_at_target, _ = recall_at_precision(y, scores, objective.target_precision)
    return {
        "average_precision": average_precision(y, scores),
        "roc_auc": roc_auc(y, scores),
        f"card_precision_at_{k}": card_precision_at_k(scored, k),
        f"recall_at_{objective.target_precision * 100:g}_precision": recall_at_target,
        "cost": cost_at_threshold(y, scores, threshold, *prices),
        "precision": float(skm.precision_score(y, alerts, zero_division=np.nan)),
        "recall": float(skm.recall_score(y, alerts, zero_division=np.nan)),
        "alerts": int(alerts.sum()),
        "n_transactions": scored.height,
        "n_frauds": int(y.sum()),
    }


def per_day_table(
    scored: pl.DataFrame,
    threshold: float,
    objective: ThresholdObjective = DEFAULT_OBJECTIVE,
    k: int = 100,
) -> pl.DataFrame:
    """One row per day of ``scored``, so a bad day or a slow decline shows behind a window's mean.

    Columns: ``day``, ``transactions``, ``frauds``, ``alerts`` (``score >= threshold``),
    ``average_precision``, ``roc_auc``, ``card_precision_at_<k>`` (the Handbook's, with cards
    detected on earlier days of ``scored`` removed), ``precision``, ``recall``, ``cost``. An
    undefined value (a day without frauds, or without alerts) is null.
    """
    fraud, alert = pl.col("tx_fraud") == 1, pl.col("score") >= threshold
    counts = (
        scored.group_by(_DAY)
        .agg(
            pl.len().alias("transactions"),
            fraud.sum().alias("frauds"),
            alert.sum().alias("alerts"),
            (fraud & alert).sum().alias("caught"),
        )
        .cast({"transactions": pl.Int64, "frauds": pl.Int64, "alerts": pl.Int64, "caught": pl.Int64})
        .with_columns(
            (pl.col("caught") / pl.col("alerts")).fill_nan(None).alias("precision"),
            (pl.col("caught") / pl.col("frauds")).fill_nan(None).alias("recall"),
            (
                objective.cost_missed_fraud * (pl.col("frauds") - pl.col("caught"))
                + objective.cost_false_alarm * (pl.col("alerts") - pl.col("caught"))
            ).alias("cost"),
        )
    )
    ranking = pl.DataFrame(
        [
            {
                "day": day[0],
                "average_precision": average_precision(rows["tx_fraud"], rows["score"]),
                "roc_auc": roc_auc(rows["tx_fraud"], rows["score"]),
            }
            for day, rows in scored.with_columns(_DAY).partition_by("day", as_dict=True).items()
        ],
        schema={"day": pl.Date, "average_precision": pl.Float64, "roc_auc": pl.Float64},
    ).with_columns(pl.col("average_precision", "roc_auc").fill_nan(None))
    card_precision = card_precision_at_k_per_day(scored, k).select(
        "day", pl.col("card_precision_at_k").alias(f"card_precision_at_{k}")
    )
    return (
        counts.join(ranking, on="day")
        .join(card_precision, on="day")
        .select(
            "day",
            "transactions",
            "frauds",
            "alerts",
            "average_precision",
            "roc_auc",
            f"card_precision_at_{k}",
            "precision",
            "recall",
            "cost",
        )
        .sort("day")
    )
