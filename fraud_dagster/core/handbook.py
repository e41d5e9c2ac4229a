"""The Fraud Detection Handbook's evaluation protocol and baseline, re-implemented in polars.

Le Borgne et al., *Reproducible Machine Learning for Credit Card Fraud Detection - Practical
Handbook* (``Chapter_References/shared_functions``), so our model can be compared with its
XGBoost on its own terms:

- ``handbook_features``: its chapter 3 baseline transformation (``is_weekend``, ``is_night``,
  ``get_customer_spending_behaviour_features``, ``get_count_risk_rolling_window``);
- ``HandbookSplit`` / ``train_test_split``: its ``get_train_test_set``: ``train_days`` from
  ``start_training``, then ``delay_days`` skipped, then ``test_days`` whose rows of cards known
  compromised by each day are removed (``metrics.known_compromised_cards``);
- ``prequential_splits``: its ``prequentialSplit``: the same split moved back ``test_days`` per fold;
- ``HANDBOOK_XGBOOST_GRID``: its chapter 5 grid for XGBoost (``ModelSelection``).

Nothing here knows about Dagster.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools

import polars as pl

from fraud_dagster.core.metrics import known_compromised_cards, without_known_compromised

WINDOWS = (1, 7, 30)
HANDBOOK_DELAY = 7
HANDBOOK_FEATURES = (
    "TX_AMOUNT",
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    *(f"CUSTOMER_ID_{stat}_{w}DAY_WINDOW" for w in WINDOWS for stat in ("NB_TX", "AVG_AMOUNT")),
    *(f"TERMINAL_ID_{stat}_{w}DAY_WINDOW" for w in WINDOWS for stat in ("NB_TX", "RISK")),
)
"""The chapter 3 ``input_features``, in the Handbook's order."""

HANDBOOK_XGBOOST_GRID = [
    {"max_depth": depth, "n_estimators": trees, "learning_rate": rate}
    for depth, trees, rate in itertools.product((3, 6, 9), (25, 50, 100), (0.1, 0.3))
]
"""Chapter 5's XGBoost grid (with ``random_state=0``), selected by prequential validation."""


def handbook_features(transactions: pl.DataFrame, delay: int = HANDBOOK_DELAY) -> pl.DataFrame:
    """The Handbook's baseline features for every row of ``transactions`` (``transaction_id``,
    ``tx_datetime``, ``customer_id``, ``terminal_id``, ``tx_amount``, ``tx_fraud``), as columns
    ``HANDBOOK_FEATURES`` next to ``transaction_id``, in the rows' order.

    - ``TX_DURING_WEEKEND``: Saturday or Sunday; ``TX_DURING_NIGHT``: hour <= 6 (so until 06:59,
      the Handbook's ``tx_hour<=6``);
    - ``CUSTOMER_ID_NB_TX_wDAY_WINDOW`` / ``_AVG_AMOUNT_``: pandas' ``rolling('wd')`` over the
      customer's transactions, i.e. those in (t - w days, t], the transaction itself included;
    - ``TERMINAL_ID_NB_TX_wDAY_WINDOW`` / ``_RISK_``: the terminal's transactions in
      (t - delay - w days, t - delay] (``rolling(delay + w) - rolling(delay)``), and the share of
      frauds among them, 0 where there are none (its ``fillna(0)``).

    Rows that share a timestamp with an earlier one of the same customer or terminal see each
    other both ways (pandas sees only the earlier rows): seconds-resolution timestamps make that
    rare.
    """
    t = "tx_datetime"
    frame = transactions.select("transaction_id", t, "customer_id", "terminal_id", "tx_amount",
                                pl.col("tx_fraud").cast(pl.Float64), _one=pl.lit(1.0)
                                ).sort(t, maintain_order=True)
    one = pl.col("_one")
    exprs = [
        pl.col("tx_amount").alias("TX_AMOUNT"),
        (pl.col(t).dt.weekday() >= 6).cast(pl.Float64).alias("TX_DURING_WEEKEND"),
        (pl.col(t).dt.hour() <= 6).cast(pl.Float64).alias("TX_DURING_NIGHT"),
    ]
    for w in WINDOWS:
        n = one.rolling_sum_by(t, f"{w}d").over("customer_id")
        total = pl.col("tx_amount").rolling_sum_by(t, f"{w}d").over("customer_id")
        exprs += [n.alias(f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"),
                  (total / n).alias(f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW")]
    n_delay = one.rolling_sum_by(t, f"{delay}d").over("terminal_id")
    frauds_delay = pl.col("tx_fraud").rolling_sum_by(t, f"{delay}d").over("terminal_id")
    for w in WINDOWS:
        n = one.rolling_sum_by(t, f"{delay + w}d").over("terminal_id") - n_delay
        frauds = pl.col("tx_fraud").rolling_sum_by(t, f"{delay + w}d").over("terminal_id") - frauds_delay
        exprs += [n.alias(f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"),
                  pl.when(n > 0).then(frauds / n).otherwise(0.0).alias(f"TERMINAL_ID_RISK_{w}DAY_WINDOW")]
    features = frame.select("transaction_id", *exprs).select("transaction_id", *HANDBOOK_FEATURES)
    return transactions.select("transaction_id").join(features, on="transaction_id", how="left",
                                                      maintain_order="left")


@dataclasses.dataclass(frozen=True)
class HandbookSplit:
    """``get_train_test_set(start_date_training, delta_train, delta_delay, delta_test)``."""

    start_training: dt.date
    train_days: int = 7
    delay_days: int = 7
    test_days: int = 7

    def train_days_list(self) -> list[dt.date]:
        return [self.start_training + dt.timedelta(days=i) for i in range(self.train_days)]

    def test_days_list(self) -> list[dt.date]:
        first = self.start_training + dt.timedelta(days=self.train_days + self.delay_days)
        return [first + dt.timedelta(days=i) for i in range(self.test_days)]

    @property
    def training_end(self) -> dt.date:
        return self.start_training + dt.timedelta(days=self.train_days - 1)

    def moved_back(self, folds: int) -> HandbookSplit:
        return dataclasses.replace(
            self, start_training=self.start_training - dt.timedelta(days=folds * self.test_days))


def _on_days(frame: pl.DataFrame, days: list[dt.date]) -> pl.DataFrame:
    return frame.filter(pl.col("tx_datetime").dt.date().is_between(days[0], days[-1]))


def train_test_split(frame: pl.DataFrame, split: HandbookSplit) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows of ``frame`` (which has ``tx_datetime``, ``customer_id``, ``tx_fraud``) that
    train, and those that test with the cards known compromised by each test day removed.
    The known cards come from the labels of ``frame`` itself, training and delay days included."""
    test_days = split.test_days_list()
    known = known_compromised_cards(frame, test_days, split.delay_days, split.start_training)
    test = without_known_compromised(_on_days(frame, test_days), known)
    return _on_days(frame, split.train_days_list()), test


def prequential_splits(split: HandbookSplit, folds: int = 4) -> list[HandbookSplit]:
    """``prequentialSplit``: fold k starts training ``k * test_days`` before ``split``."""
    return [split.moved_back(k) for k in range(folds)]


def validation_split(test_split: HandbookSplit) -> HandbookSplit:
    """Chapter 5's ``start_date_training_for_valid``: validation folds end where the test
    split's training starts, so every validation label is known before the test training."""
    return dataclasses.replace(test_split, start_training=test_split.start_training
                               - dt.timedelta(days=test_split.delay_days + test_split.test_days))
