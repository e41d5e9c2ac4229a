"""Dagster warns, at import, about every beta or preview API it is asked for (single-run backfill
policies, partitioned asset checks, dagster-pandera, dagster-mlflow): eight blocks before the
first line of a run. They are known and chosen (the README's design choices name them); other
warnings still show. Imported, for that side effect, first by each module that asks for such an
API, so the filter is in place whichever of them a process imports first (``fraud-dagster run``,
``dagster dev``, its code server and run workers, a benchmark, a test)."""

import warnings

import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
