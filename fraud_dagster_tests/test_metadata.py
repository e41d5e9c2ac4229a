import datetime as dt

import dagster as dg
import polars as pl

from fraud_dagster.metadata import as_table


def test_a_frame_is_a_ui_table_with_typed_columns_and_plain_cells():
    frame = pl.DataFrame({"day": [dt.date(2025, 3, 1), None], "n": [3, 4], "share": [0.5, None],
                          "drift": [True, False], "columns": [["a", "b"], []], "why": ["x", "y"]})
    value = as_table(frame)
    assert isinstance(value, dg.TableMetadataValue)
    assert [(c.name, c.type) for c in value.schema.columns] == [
        ("day", "date"), ("n", "int"), ("share", "float"), ("drift", "bool"),
        ("columns", "string"), ("why", "string")]
    assert [r.data for r in value.records] == [
        {"day": "2025-03-01", "n": 3, "share": 0.5, "drift": True, "columns": "['a', 'b']",
         "why": "x"},
        {"day": None, "n": 4, "share": None, "drift": False, "columns": "[]", "why": "y"}]
