"""Jobs. Each selects assets of one partitioning only (daily here; the unpartitioned retrain job
comes with the model)."""

import dagster as dg

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("transactions", "features"),
    description="Raw, validated and quarantined transactions and their features for the selected"
    " days, in one run.",
)
