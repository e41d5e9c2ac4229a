"""Which feature state the service picks up: the newest ``<day>.parquet`` of the pipeline's
``feature_state`` folder, on a local disk or at an fsspec URL (``FRAUD_STORAGE_URL``)."""

import datetime as dt

import polars as pl
import pytest
from upath import UPath

from fraud_dagster.serving.live import newest_state_file


@pytest.fixture(params=["folder", "file_url", "memory_url"])
def state_dir(request, tmp_path) -> str:
    """A feature_state folder given as the service is given it: a path, or a URL."""
    if request.param == "folder":
        return str(tmp_path / "feature_state")
    if request.param == "file_url":
        return (tmp_path / "feature_state").as_uri()
    return f"memory://{tmp_path.name}/feature_state"


def test_the_newest_day_is_picked_and_temporary_or_foreign_files_are_not(state_dir):
    folder = UPath(state_dir)
    folder.mkdir(parents=True)
    for name in ("2025-03-01.parquet", "2025-03-03.parquet", "2025-03-02.parquet",
                 ".2025-03-09.parquet.1f2e.tmp", "notes.parquet", "2025-03-08.csv"):
        with (folder / name).open("wb") as handle:
            pl.DataFrame({"day": [name]}).write_parquet(handle)
    day, path = newest_state_file(state_dir)
    assert day == dt.date(2025, 3, 3)
    with path.open("rb") as handle:
        assert pl.read_parquet(handle)["day"].to_list() == ["2025-03-03.parquet"]


def test_a_folder_not_yet_made_has_no_state(state_dir):
    assert newest_state_file(state_dir) is None
