"""What the service serves, kept current without a restart: the newest exported model and the
newest feature state the pipeline materialised.

At start-up the store takes the newest ``feature_state`` day (the pipeline's files under
``<data root>/assets/feature_state/``, or the one bundled with the model when that is newer or
the files are not at hand) and replays the prediction log of the days after it, so a restart
loses none of the day's transactions. Then a thread looks every ``interval`` seconds for a
newer state (the nightly ``daily_job``) and a newer model (``bento_model`` exporting a new
champion); each is loaded beside the one in use and swapped in with one assignment, so requests
in flight finish on what they started with and none fails. Nothing here knows about BentoML: the
service hands in how to find the newest model.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import polars as pl
from upath import UPath

from fraud_dagster.serving.prediction_log import read_since
from fraud_dagster.serving.scoring import Scorer, bundled_state
from fraud_dagster.serving.store import FeatureStore

logger = logging.getLogger(__name__)


def newest_state_file(folder: str | Path) -> tuple[dt.date, UPath] | None:
    """The newest ``<day>.parquet`` of a ``feature_state`` folder, local or at an fsspec URL
    (object storage: ``FRAUD_STORAGE_URL``); temporary files skipped."""
    days = []
    for path in UPath(folder).glob("*.parquet"):
        try:
            days.append((dt.date.fromisoformat(path.stem), path))
        except ValueError:
            continue
    return max(days) if days else None


@dataclasses.dataclass(frozen=True)
class Model:
    tag: str
    path: Path
    scorer: Scorer


class Live:
    """The served model and the feature store, refreshed by ``refresh`` (and its thread)."""

    def __init__(self, store: FeatureStore, state_dir: str | Path, journal_dir: Path,
                 newest_model: Callable[[], tuple[str, Path]],
                 load_scorer: Callable[[Path], Scorer], interval: float):
        self.store = store
        self.state_dir = state_dir
        self.journal_dir = Path(journal_dir)
        self._newest_model = newest_model
        self._load_scorer = load_scorer
        self.interval = interval
        tag, path = newest_model()
        self.model = Model(tag, path, load_scorer(path))
        self.refresh_state()
        if store.state_date is not None:
            journal = read_since(self.journal_dir, store.state_date)
            replayed = store.replay(journal) if journal is not None else 0
            logger.info("feature state of %s, %d transactions replayed from the prediction log",
                        store.state_date, replayed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="live-refresh", daemon=True)

    @property
    def scorer(self) -> Scorer:
        return self.model.scorer

    def start(self) -> None:
        self._thread.start()

    def refresh_state(self) -> bool:
        """Swap in the newest feature state if it is newer than the served one."""
        newest = newest_state_file(self.state_dir)
        bundled_day = self.model.scorer.state_date
        served = self.store.state_date
        if newest is not None and (bundled_day is None or newest[0] >= bundled_day):
            day, path = newest
            if served is None or day > served:
                with path.open("rb") as handle:
                    return self.store.load_state(pl.read_parquet(handle))
        elif bundled_day is not None and (served is None or bundled_day > served):
            return self.store.load_state(bundled_state(self.model.path))
        return False

    def refresh_model(self) -> bool:
        """Swap in the newest exported model if it is another one."""
        tag, path = self._newest_model()
        if tag == self.model.tag:
            return False
        self.model = Model(tag, path, self._load_scorer(path))
        logger.info("now serving %s (MLflow v%s)", tag, self.model.scorer.model_version)
        return True

    def refresh(self) -> None:
        for refresh in (self.refresh_model, self.refresh_state):
            try:
                refresh()
            except Exception:  # noqa: BLE001  (a bad export or file must not stop serving)
                logger.exception("could not %s; still serving what was loaded",
                                 refresh.__name__.replace("_", " "))

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
