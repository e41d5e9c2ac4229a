"""Where stored data is read from: the daily assets' tables, the serving prediction log, the
BentoML model store."""

import datetime as dt
import os
from pathlib import Path

import dagster as dg
import polars as pl
from upath import UPath

from fraud_dagster.io_managers import in_threads, read_parquet
from fraud_dagster.serving.prediction_log import read_day

# BentoML reports usage to its vendor unless told not to; this project talks to no one. Set where
# the store resource is defined, so before any import of BentoML by the code that uses it.
# (BentoML itself is imported where it is used: it adds seconds to every load of the definitions.)
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")


class DailyTables(dg.ConfigurableResource):
    """Reads stored days of daily assets from the same layout `PolarsParquetIOManager` writes.

    For days an asset reads that no partition mapping declares: the unpartitioned model's training
    and test windows (named by its config), the history window before a features run's days.
    """

    base_path: str

    def read_days(self, asset_key: dg.AssetKey, days: list[dt.date]) -> pl.DataFrame:
        """All of ``days``, or ``FileNotFoundError`` naming the ones not materialised."""
        frame, missing = self.read_existing_days(asset_key, days)
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of the days {days[0]}..{days[-1]} of"
                f" {asset_key.to_user_string()} are not materialised"
                f" (e.g. {[d.isoformat() for d in missing[:5]]}): materialise them first"
            )
        return frame

    def read_existing_days(self, asset_key: dg.AssetKey, days: list[dt.date]
                           ) -> tuple[pl.DataFrame, list[dt.date]]:
        """The days of ``asset_key`` that are materialised (an empty frame if none), and the
        days that are not."""
        folder = UPath(self.base_path).joinpath(*asset_key.path)
        paths = {day: folder / f"{day.isoformat()}.parquet" for day in days}
        present = [path for path in paths.values() if path.exists()]
        missing = [day for day, path in paths.items() if not path.exists()]
        frames = in_threads(read_parquet, present, threads=4)
        return (pl.concat(frames) if frames else pl.DataFrame()), missing

    def read_column_of_other_days(
        self, asset_key: dg.AssetKey, column: str, first: dt.date, last: dt.date
    ) -> pl.DataFrame:
        """``column`` and the ``day`` of every stored day of ``asset_key`` outside
        ``first..last``: reads only that column of each file (parquet is columnar)."""
        folder = UPath(self.base_path).joinpath(*asset_key.path)
        paths = []
        if folder.exists():
            for path in folder.iterdir():
                try:
                    day = dt.date.fromisoformat(path.name.removesuffix(".parquet"))
                except ValueError:
                    continue
                if path.name.endswith(".parquet") and not first <= day <= last:
                    paths.append((day, path))
        frames = in_threads(
            lambda item: read_parquet(item[1], columns=[column]).with_columns(
                day=pl.lit(item[0], dtype=pl.Date)),
            sorted(paths), threads=4,
        )
        if not frames:
            return pl.DataFrame(schema={column: pl.Int64, "day": pl.Date})
        return pl.concat(frames)


class PredictionLogStore(dg.ConfigurableResource):
    """The serving prediction log's folder (`<data root>/predictions`, where bento/service.py
    writes with the same `FRAUD_DATA_DIR`)."""

    folder: str

    def read_day(self, day: dt.date) -> pl.DataFrame | None:
        return read_day(Path(self.folder), day)


class BentoStore(dg.ConfigurableResource):
    """A BentoML home folder; models live in `<home>/models` (what `BENTOML_HOME` points at)."""

    home: str

    def model_store(self):
        from bentoml._internal.models import ModelStore

        folder = Path(self.home) / "models"
        folder.mkdir(parents=True, exist_ok=True)
        return ModelStore(str(folder))
