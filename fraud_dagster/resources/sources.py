"""Where raw transactions come from (``FRAUD_SOURCE``): the simulator or the landing folder."""

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Sequence

import dagster as dg
import polars as pl
from pydantic import Field

from fraud_dagster.core.labels import simulated_reports
from fraud_dagster.core.landing import Delivery, LandingFolder
from fraud_dagster.core.simulator import Simulator, SimulatorConfig


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


class TransactionSource(dg.ConfigurableResource, ABC):
    """Delivers raw transactions (``RawTransaction`` schema) for a range of days."""

    @abstractmethod
    def read_days(self, first: dt.date, last: dt.date) -> pl.DataFrame: ...


class SimulatorSource(TransactionSource):
    """The built-in simulator: seeded, the same rows for a day whichever other days are made."""

    seed: int = Field(default=42, description="Seed of every draw (with the purpose and the day).")
    n_customers: int = Field(default=5_000, description="Customers simulated.")
    n_terminals: int = Field(default=10_000, description="Terminals on the 100x100 grid.")
    drift_start: str | None = Field(
        default=None, description="First day (ISO date) of the simulated drift; none when unset"
        " (`FRAUD_DRIFT_START`, default: 120 days after the first partition).")
    drift_amount_factor: float = Field(default=SimulatorConfig.drift_amount_factor,
                                       description="From `drift_start`, amounts are multiplied"
                                       " by this.")
    drift_fraud_factor: float = Field(default=SimulatorConfig.drift_fraud_factor,
                                      description="From `drift_start`, stolen cards and card"
                                      " testing are this many times more frequent.")
    stolen_cards_per_day: float = Field(default=SimulatorConfig.n_stolen_cards,
                                        description="Cards stolen and used at night away from"
                                        " home, per day on average (scenario 4).")
    tested_cards_per_day: float = Field(default=SimulatorConfig.n_tested_cards,
                                        description="Cards tested in a burst of small purchases,"
                                        " per day on average (scenario 5).")
    delayed_labels: bool = Field(
        default=True,
        description="Each fraud is delivered with the report it will get (some never, most within"
        " a week, a tail to 60 days), genuine ones unreported. False (the Handbook's setting):"
        " every transaction carries its 0/1 label, reported a week after it.")
    scale: int = Field(default=1, description="Customers, terminals and every fraud scenario's"
                       " daily count times this (`FRAUD_SIMULATOR_SCALE`; 10: about 100,000"
                       " transactions a day).")

    @classmethod
    def handbook(cls, scale: int = 1) -> "SimulatorSource":
        """The Fraud Detection Handbook's setting (``SimulatorConfig.handbook``)."""
        config = SimulatorConfig.handbook()
        return cls(
            seed=config.seed,
            drift_start=None,
            stolen_cards_per_day=config.n_stolen_cards,
            tested_cards_per_day=config.n_tested_cards,
            delayed_labels=False,
            scale=scale,
        )

    def simulator_config(self) -> SimulatorConfig:
        return SimulatorConfig(
            seed=self.seed,
            n_customers=self.n_customers,
            n_terminals=self.n_terminals,
            drift_start=dt.date.fromisoformat(self.drift_start) if self.drift_start else None,
            drift_amount_factor=self.drift_amount_factor,
            drift_fraud_factor=self.drift_fraud_factor,
            n_stolen_cards=self.stolen_cards_per_day,
            n_tested_cards=self.tested_cards_per_day,
        ).scaled(self.scale)

    def read_days(self, first: dt.date, last: dt.date) -> pl.DataFrame:
        simulator = Simulator(self.simulator_config())

        def delivered(day: dt.date) -> pl.DataFrame:
            rows = simulator.day(day)
            if self.delayed_labels:
                return simulated_reports(rows, self.seed)
            return rows.with_columns(label_reported_at=pl.lit(None, dtype=pl.Datetime("us")))

        frames = [
            delivered(day).with_columns(
                partition_date=pl.lit(day),
                source=pl.lit("simulator"),
                parse_errors=pl.lit(None, dtype=pl.Utf8),
            )
            for day in _days(first, last)
        ]
        return pl.concat(frames)


class LandingSource(TransactionSource):
    """Files ingested from the landing folder: ``<landing_dir>/_accepted/<day>/``, plus the new
    top-level files an ingest run was asked to take (``landing_sensor`` names them by content)."""

    landing_dir: str = Field(description="The landing folder (`FRAUD_LANDING_DIR`).")
    settle_seconds: float = Field(
        default=5.0,
        description="A top-level file is read only once it has not been modified for this long"
        " (`FRAUD_LANDING_SETTLE_SECONDS`): a writer still writing it keeps changing its mtime.")

    def folder(self) -> LandingFolder:
        return LandingFolder(self.landing_dir)

    def read_days(self, first: dt.date, last: dt.date) -> pl.DataFrame:
        return self.read_delivery(first, last, []).transactions

    def read_delivery(
        self, first: dt.date, last: dt.date, take: Sequence[tuple[str, str, dt.date]]
    ) -> Delivery:
        return self.folder().read_delivery(_days(first, last), take)

    def commit(self, delivery: Delivery):
        return self.folder().commit(delivery)

    def read_label_delivery(
        self, first: dt.date, last: dt.date, take: Sequence[tuple[str, str, dt.date]]
    ) -> Delivery:
        """The label reports of ``labels/_accepted/<day>/`` and the label files in ``take``."""
        return self.folder().labels().read_delivery(_days(first, last), take)

    def commit_labels(self, delivery: Delivery):
        return self.folder().labels().commit(delivery)
