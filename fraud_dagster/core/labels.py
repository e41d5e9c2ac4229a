"""Fraud labels as data: when each label becomes known, and what is known at a given time.

A card issuer learns that a transaction was fraud days or weeks after it (a chargeback, a
customer's claim, an investigation), and mostly never hears about the genuine ones. Here a label
is a *report*: transaction ``transaction_id`` is fraud (``tx_fraud`` 1) or genuine (0) from
``reported_at`` on. ``fraud_labels`` holds the reports, partitioned by the day they were made.

What is known at the end of day A (``known_labels``):

- a transaction is **known fraud** once a fraud report was made by the end of A;
- it is **known genuine** once a genuine report was made by then, or once it is *mature*: its
  day is at least ``LABEL_MATURITY_DAYS`` before A and no fraud report came by the end of A;
- otherwise its label is **unknown** (null): a recent transaction nobody reported yet. Training,
  evaluation and the drift report's labelled performance leave such rows out.

A fraud reported after its transaction matured was counted genuine until its report: that is
what a fraud team sees too.

Where reports come from (``delivered_reports``): a transactions delivery may carry labels
(``tx_fraud``); each row's ``label_reported_at`` says when its label was reported, and where it is
null (the Fraud Detection Handbook's layout has no such column) the label counts as reported
``LABEL_REPORT_DELAY_DAYS`` after its transaction. The built-in simulator delivers each fraud with
the report it will get (``simulated_reports``): a share is never reported, most are reported
within a week, a tail up to ``MAX_LABEL_DELAY_DAYS``; genuine transactions are not reported.
Label files delivered on their own go through the same rules (``split_reports``). Nothing here
knows about Dagster.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import polars as pl

LABEL_MATURITY_DAYS = 7
"""A transaction with no fraud report this many days after its day counts as genuine. The one
statement of the label delay: terminal risk windows end this many days back, the training and
test windows leave this gap, the drift report judges the day this many days before it."""
LABEL_REPORT_DELAY_DAYS = 7
"""A delivered label with no ``label_reported_at`` counts as reported this long after its
transaction (the Handbook's own assumption: every label is known after a week)."""
MAX_LABEL_DELAY_DAYS = 60
"""A report comes at most this many days after its transaction; later ones are quarantined."""

NEVER_REPORTED_SHARE = 0.10
"""Simulator: the share of frauds nobody ever reports."""
QUICK_REPORT_SHARE = 0.85
"""Simulator: of the reported frauds, the share reported after an exponential delay of mean
``QUICK_REPORT_MEAN_DAYS`` (capped at ``MAX_LABEL_DELAY_DAYS``); the others after a delay uniform
between 7 and ``MAX_LABEL_DELAY_DAYS`` days (a chargeback's slower path)."""
QUICK_REPORT_MEAN_DAYS = 2.0
_REPORTS_STREAM = 1_000

REPORT_DTYPES: dict[str, pl.DataType] = {
    "transaction_id": pl.Int64(),
    "tx_fraud": pl.Int8(),
    "reported_at": pl.Datetime("us"),
    "source": pl.Utf8(),
}
"""A label report as delivered."""
LABEL_DTYPES: dict[str, pl.DataType] = {
    **REPORT_DTYPES,
    "tx_datetime": pl.Datetime("us"),
    "customer_id": pl.Int64(),
    "terminal_id": pl.Int64(),
}
"""An accepted report (a ``fraud_labels`` row), with its transaction's time and entities."""
QUARANTINED_LABEL_DTYPES = {**REPORT_DTYPES, "report_day": pl.Date(), "quarantine_reason": pl.Utf8()}

_DAY = dt.timedelta(days=1)


def simulated_reports(transactions: pl.DataFrame, seed: int) -> pl.DataFrame:
    """The simulator's transactions as a delivery carries them: ``tx_fraud`` 1 and
    ``label_reported_at`` for each fraud that will be reported, both null for the rest (genuine
    ones, and frauds never reported). The truth stays in ``tx_fraud_scenario`` (0: genuine).

    The delays of a day's rows are drawn from a generator seeded by (seed, day), in row order, so
    a day's reports are the same whichever other days are simulated."""
    parts = []
    for (day,), rows in transactions.group_by(pl.col("tx_datetime").dt.date(), maintain_order=True):
        rng = np.random.default_rng([seed, _REPORTS_STREAM, day.toordinal()])
        reported, quick, quick_delay, slow_delay = rng.random((4, rows.height))
        days = np.where(
            quick < QUICK_REPORT_SHARE,
            np.minimum(-np.log1p(-quick_delay) * QUICK_REPORT_MEAN_DAYS, MAX_LABEL_DELAY_DAYS),
            7 + slow_delay * (MAX_LABEL_DELAY_DAYS - 7),
        )
        fraud = rows.get_column("tx_fraud_scenario").to_numpy() > 0
        keep = pl.Series(fraud & (reported >= NEVER_REPORTED_SHARE))
        delay = pl.Series((days * 86_400 * 10**6).astype(np.int64)).cast(pl.Duration("us"))
        parts.append(rows.with_columns(
            tx_fraud=pl.when(keep).then(pl.lit(1, dtype=pl.Int8)),
            label_reported_at=pl.when(keep).then(pl.col("tx_datetime") + delay),
        ))
    if not parts:
        return transactions.with_columns(label_reported_at=pl.lit(None, dtype=pl.Datetime("us")))
    return pl.concat(parts)


def delivered_reports(transactions: pl.DataFrame) -> pl.DataFrame:
    """The label reports a transactions delivery carries (``LABEL_DTYPES``): a row per
    transaction with a ``tx_fraud``, reported at its ``label_reported_at`` or
    ``LABEL_REPORT_DELAY_DAYS`` after the transaction."""
    columns = transactions.columns
    reported_at = (pl.col("label_reported_at") if "label_reported_at" in columns
                   else pl.lit(None, dtype=pl.Datetime("us")))
    if "tx_fraud" not in columns:
        return pl.DataFrame(schema=LABEL_DTYPES)
    return transactions.filter(pl.col("tx_fraud").is_not_null()).select(
        "transaction_id",
        pl.col("tx_fraud").cast(pl.Int8),
        reported_at.fill_null(pl.col("tx_datetime") + dt.timedelta(days=LABEL_REPORT_DELAY_DAYS))
        .alias("reported_at"),
        source=pl.lit("delivery"),
        tx_datetime="tx_datetime", customer_id="customer_id", terminal_id="terminal_id",
    ).cast(LABEL_DTYPES)


def report_window(day: dt.date) -> tuple[dt.date, dt.date]:
    """The transaction days a report made on ``day`` can be about."""
    return day - dt.timedelta(days=MAX_LABEL_DELAY_DAYS), day


@dataclasses.dataclass(frozen=True)
class LabelSplit:
    accepted: pl.DataFrame
    quarantined: pl.DataFrame


def split_reports(reports: pl.DataFrame, day: dt.date, transactions: pl.DataFrame,
                  earlier: pl.DataFrame) -> LabelSplit:
    """The reports made on ``day`` (``REPORT_DTYPES``, and ``parse_errors`` for a file's
    unreadable values) split into accepted ones
    (``LABEL_DTYPES``) and quarantined ones, each with every reason; reports in = accepted +
    quarantined.

    ``transactions`` holds the validated transactions of ``report_window(day)`` (at least
    ``transaction_id``, ``tx_datetime``, ``customer_id``, ``terminal_id``); ``earlier`` the
    reports accepted on the days before (``transaction_id``, ``tx_fraud``, ``reported_at``).
    A report is quarantined when its label is not 0 or 1, it has no time or one outside ``day``,
    its transaction is unknown (none in the window), it comes before its transaction, or it
    repeats or contradicts another report of the transaction (earlier, or the same day: of
    identical reports the first is kept, conflicting ones are all quarantined)."""
    start = pl.lit(dt.datetime.combine(day, dt.time()))
    errors = pl.col("parse_errors") if "parse_errors" in reports.columns else pl.lit(None, pl.Utf8)
    frame = (reports.select(*REPORT_DTYPES, _errors=errors).cast(REPORT_DTYPES)
             .with_row_index("_row"))
    keys = transactions.select("transaction_id", "tx_datetime", "customer_id", "terminal_id")
    before = (earlier.select("transaction_id", _earlier_label="tx_fraud",
                             _earlier_day=pl.col("reported_at").dt.date())
              .unique("transaction_id", keep="first"))
    frame = (frame.join(keys, on="transaction_id", how="left", maintain_order="left")
             .join(before, on="transaction_id", how="left", maintain_order="left"))
    label = pl.col("tx_fraud")
    same_day = frame.filter(label.is_in([0, 1])).group_by("transaction_id").agg(
        _labels=label.n_unique(), _first=pl.col("_row").min())
    frame = frame.join(same_day, on="transaction_id", how="left", maintain_order="left")
    window_first, _ = report_window(day)
    rules = [
        pl.when(pl.col("_errors").is_not_null()).then(pl.lit("unreadable value: ") + pl.col("_errors")),
        pl.when(label.is_null() | ~label.is_in([0, 1])).then(pl.lit("tx_fraud is not 0 or 1")),
        pl.when(pl.col("reported_at").is_null()).then(pl.lit("missing reported_at")),
        pl.when((pl.col("reported_at") < start) | (pl.col("reported_at") >= start + _DAY))
        .then(pl.lit(f"reported_at outside {day}")),
        pl.when(pl.col("transaction_id").is_null()).then(pl.lit("missing transaction_id")),
        pl.when(pl.col("transaction_id").is_not_null() & pl.col("tx_datetime").is_null()).then(
            pl.lit(f"unknown transaction_id (no validated transaction from {window_first} to {day})")),
        pl.when(pl.col("reported_at") < pl.col("tx_datetime")).then(
            pl.lit("reported before its transaction")),
        pl.when(pl.col("_labels") > 1).then(pl.lit("conflicting labels reported the same day")),
        pl.when(label.is_in([0, 1]) & (pl.col("_labels") == 1) & (pl.col("_row") != pl.col("_first")))
        .then(
            pl.lit("repeats a report of the same day")),
        pl.when(pl.col("_earlier_label").is_not_null() & (pl.col("_earlier_label") != label)).then(
            pl.lit("conflicts with the label reported on ") + pl.col("_earlier_day").cast(pl.Utf8)),
        pl.when(pl.col("_earlier_label").is_not_null() & (pl.col("_earlier_label") == label)).then(
            pl.lit("already reported on ") + pl.col("_earlier_day").cast(pl.Utf8)),
    ]
    frame = frame.with_columns(quarantine_reason=pl.concat_str(rules, separator="; ",
                                                               ignore_nulls=True))
    bad = pl.col("quarantine_reason") != ""
    return LabelSplit(
        accepted=frame.filter(~bad).select(list(LABEL_DTYPES)).cast(LABEL_DTYPES),
        quarantined=frame.filter(bad).select(
            *REPORT_DTYPES, "quarantine_reason", report_day=pl.lit(day)).select(
            list(QUARANTINED_LABEL_DTYPES)).cast(QUARANTINED_LABEL_DTYPES),
    )


def end_of(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day + _DAY, dt.time())


def known_labels(transactions: pl.DataFrame, labels: pl.DataFrame, as_of: dt.date) -> pl.Series:
    """``tx_fraud`` of each of ``transactions`` (``transaction_id``, ``tx_datetime``) as known at
    the end of ``as_of`` from the accepted reports ``labels``: 1, 0, or null when unknown."""
    known = (labels.filter(pl.col("reported_at") < end_of(as_of))
             .group_by("transaction_id").agg(pl.col("tx_fraud").max().alias("_known")))
    mature = pl.col("tx_datetime") < end_of(as_of - dt.timedelta(days=LABEL_MATURITY_DAYS))
    return (transactions.select("transaction_id", "tx_datetime")
            .join(known, on="transaction_id", how="left", maintain_order="left")
            .select(pl.coalesce("_known", pl.when(mature).then(pl.lit(0, dtype=pl.Int8)))
                    .cast(pl.Int8).alias("tx_fraud"))
            .to_series())


def label_coverage(labels: pl.Series) -> dict[str, int]:
    """How many rows are known fraud, known genuine, and unknown."""
    return {"known_fraud": int((labels == 1).sum()), "known_genuine": int((labels == 0).sum()),
            "unknown": int(labels.is_null().sum())}
