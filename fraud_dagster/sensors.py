"""Sensors: ``landing_sensor`` turns files dropped into the landing folder into ingest runs;
``drift_sensor`` retrains when drift reports say so; ``run_failure_alerts`` and
``check_failure_alerts`` record what went wrong where a user sees it."""

import datetime as dt
import hashlib
import json
import time

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.tags import RUN_KEY_TAG

from fraud_dagster import settings
from fraud_dagster.assets.model import FraudModelConfig, newest_labelled_day
from fraud_dagster.core.landing import Decision
from fraud_dagster.jobs import daily_job, ingest_job, retrain_job
from fraud_dagster.assets.features import FEATURES
from fraud_dagster.assets.labels import FRAUD_LABELS, FraudLabelsConfig
from fraud_dagster.assets.transactions import VALIDATED, LandingFileToTake, RawTransactionsConfig
from fraud_dagster.rejections import LandingRejection, LandingRejectionsConfig, landing_rejections_job
from fraud_dagster.partitions import daily_partitions, partition_range_tags
from fraud_dagster.resources import (
    AlertSink,
    DailyTables,
    DriftPolicy,
    LandingSource,
    TransactionSource,
)


def contiguous_ranges(days: list[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Sorted distinct days grouped into (first, last) runs of consecutive days."""
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in sorted(set(days)):
        if ranges and day == ranges[-1][1] + dt.timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def _partition_range() -> tuple[dt.date, dt.date | None]:
    """First and last existing daily partition (None before the first day has ended)."""
    first_key = daily_partitions.get_first_partition_key()
    last_key = daily_partitions.get_last_partition_key()
    first = dt.date.fromisoformat(first_key) if first_key else settings.start_date()
    return first, dt.date.fromisoformat(last_key) if last_key else None


LANDING_STATE_VERSION = 1
_FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _run_finished(instance: dg.DagsterInstance, run_key: str) -> bool:
    """Whether the run launched for ``run_key`` has ended (a run not created yet has not)."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1)
    return bool(runs) and runs[0].status in _FINISHED


def _range_days(first: str, last: str) -> list[str]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:16]


def _to_take(batch: list[Decision]) -> list[LandingFileToTake]:
    return [LandingFileToTake(name=d.name, sha256=d.sha256, day=d.day.isoformat()) for d in batch]


def _files_request(run_key: str, job, ops: dict[str, dg.Config],
                   files: list[Decision], tags: dict[str, str]) -> dg.RunRequest:
    """A run of ``job`` for landing ``files``, each op configured by its own config class."""
    return dg.RunRequest(run_key=run_key, job_name=job.name, run_config=dg.RunConfig(ops=ops),
                         tags={**tags,
                               "fraud/landing_files": ", ".join(d.name for d in files)[:200]})


@dg.sensor(
    jobs=[ingest_job, landing_rejections_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING
    if settings.source() == "landing"
    else dg.DefaultSensorStatus.STOPPED,
    description="Decides, without touching the landing folder, what to do with each new file:"
    " one ingest_job run per block of consecutive days (run keys from the files' content), and a"
    " landing_rejections_job run for the files it will not take.",
)
def landing_sensor(context: dg.SensorEvaluationContext, transaction_source: TransactionSource):
    """Only decides: the runs it requests move the files (an ingest run after the rows are stored).

    The cursor remembers the files already requested (name, signature, run key, day), so an
    unchanged file is requested once, and the signatures of files not settled yet, so a recently
    modified file is taken only when a second tick finds it unchanged. A file whose day has a run
    still in flight waits, so two runs never write one day at once. A failed run leaves its files
    where they are (its failure is alerted): re-execute it, or touch the files."""
    if not isinstance(transaction_source, LandingSource):
        return dg.SkipReason("FRAUD_SOURCE is not 'landing': raw transactions come from the simulator")
    folder = transaction_source.folder()
    state = json.loads(context.cursor) if context.cursor else {}
    requested: dict[str, dict] = state.get("requested", {}) if state.get("v") == LANDING_STATE_VERSION else {}
    labels_folder = folder.labels()
    entries = {e.name: e for e in folder.entries()}
    label_entries = {f"{folder.LABELS}/{e.name}": e for e in labels_folder.entries()}
    requested = {
        name: r for name, r in requested.items()
        if (name in entries and entries[name].signature == r["sig"])
        or (name in label_entries and label_entries[name].signature == r["sig"])
    }
    busy = {
        day for r in requested.values()
        if r.get("day") and not _run_finished(context.instance, r["run_key"])
        for day in _range_days(r["day"], r.get("last") or r["day"])
    }
    first, last = _partition_range()
    now = time.time()
    seen_before: dict[str, str] = state.get("seen", {})
    settling, seen = [], {}

    def decide_all(folder_, keyed: dict) -> list[Decision]:
        """The decisions for the entries of ``folder_`` not requested yet (``keyed`` by their
        cursor key); the ones still settling are noted in ``settling`` and ``seen``."""
        decisions = []
        for key, entry in keyed.items():
            if key in requested:
                continue
            try:
                decision = folder_.decide(entry, now, transaction_source.settle_seconds, first,
                                          last, seen_unchanged=seen_before.get(key) == entry.signature)
            except Exception as exc:  # one entry never stops the others
                decision = Decision(entry.name, entry.signature, "reject",
                                    reason=f"could not be judged: {type(exc).__name__}: {exc}"[:500])
            if decision is None:
                settling.append(key)
                seen[key] = entry.signature
            else:
                decisions.append(decision)
        return folder_.without_repeats(decisions)

    decisions = decide_all(folder, entries)
    label_decisions = decide_all(labels_folder, label_entries)
    takes = [d for d in decisions if d.action == "take"]
    waiting = [d for d in takes if d.day.isoformat() in busy]
    takes = [d for d in takes if d.day.isoformat() not in busy]
    others = [d for d in decisions if d.action != "take"]

    run_requests = []

    def request(key_prefix: str, job, ops: dict[str, dg.Config], batch: list[Decision],
                tags: dict[str, str], cursor_key, days) -> None:
        """Ask for a run of ``job`` for the files of ``batch``, and remember each under
        ``cursor_key(d)`` with the ``days(d)`` its run writes. The run key comes from the files'
        content (a corrected file is a new delivery) and signature (touching a file whose run
        failed asks for a new run; an unchanged file is never requested twice)."""
        run_key = f"{key_prefix}-{_digest([f'{d.key}:{d.signature}' for d in batch])}"
        run_requests.append(_files_request(run_key, job, ops, batch, tags))
        for d in batch:
            requested[cursor_key(d)] = {"sig": d.signature, "run_key": run_key, **days(d)}

    for start, end in contiguous_ranges([d.day for d in takes]):
        batch = sorted((d for d in takes if start <= d.day <= end), key=lambda d: d.name)
        request(f"landing-{start}-{end}", ingest_job,
                {"raw_transactions": RawTransactionsConfig(landing_files=_to_take(batch))}, batch,
                {**partition_range_tags(start, end), "fraud/trigger": "landing"},
                lambda d: d.name, lambda d: {"day": d.day.isoformat()})
        for d in batch:
            if d.ignored_columns:
                context.log.info(f"{d.name}: ignored columns {', '.join(d.ignored_columns)}")
    # Label files: one ingest_job run from the first day they report on to the newest day
    # ingested, so that each day's features see the new reports (a day's state counts every
    # report made by its end). A label file waits until its day's transactions are ingested.
    ingested = sorted(context.instance.get_materialized_partitions(VALIDATED))
    label_takes = [d for d in label_decisions if d.action == "take"]
    label_waiting = [d for d in label_takes
                     if d.day.isoformat() not in ingested or d.day.isoformat() in busy]
    label_takes = [d for d in label_takes if d not in label_waiting]
    if label_takes:
        start, end = min(d.day for d in label_takes), dt.date.fromisoformat(ingested[-1])
        if any(day in busy for day in _range_days(start.isoformat(), end.isoformat())):
            label_waiting += label_takes
        else:
            batch = sorted(label_takes, key=lambda d: d.name)
            request(f"labels-{start}-{end}", ingest_job,
                    {"fraud_labels": FraudLabelsConfig(label_files=_to_take(batch))}, batch,
                    {**partition_range_tags(start, end), "fraud/trigger": "landing_labels"},
                    lambda d: f"{folder.LABELS}/{d.name}",
                    lambda d: {"day": start.isoformat(), "last": end.isoformat()})
    label_others = [d for d in label_decisions if d.action != "take"]
    others += label_others
    if others:
        rejections = LandingRejectionsConfig(files=[
            LandingRejection(name=d.name, signature=d.signature, reason=d.reason, action=d.action,
                             folder=folder.LABELS if d in label_others else "")
            for d in others])
        request("landing-rejects", landing_rejections_job, {"reject_landing_files": rejections},
                others, {"fraud/trigger": "landing"},
                lambda d: f"{folder.LABELS}/{d.name}" if d in label_others else d.name,
                lambda d: {"day": None})
        for d in others:
            context.log.warning(f"{d.action}: {d.name}: {d.reason}")

    cursor = json.dumps({"v": LANDING_STATE_VERSION, "requested": requested, "seen": seen},
                        sort_keys=True)
    if run_requests:
        return dg.SensorResult(run_requests=run_requests, cursor=cursor)
    notes = []
    if waiting:
        notes.append(f"waiting for the runs in flight on their days: {', '.join(d.name for d in waiting)}")
    if label_waiting:
        notes.append("label files waiting for their day's transactions to be ingested (or for a"
                     f" run in flight): {', '.join(d.name for d in label_waiting)}")
    if settling:
        notes.append("not settled yet (modified too recently to be sure it is complete, or a"
                     f" temporary name): {', '.join(settling)}")
    return dg.SensorResult(
        skip_reason="; ".join(notes) or f"no new files in {folder.root}", cursor=cursor
    )


DRIFT_REPORT = dg.AssetKey("drift_report")


def _run_days(run: dg.DagsterRun | None) -> str | None:
    """The partitions a run covered, from its tags: a day, or ``first..last`` for a range."""
    if run is None:
        return None
    tags = run.tags
    if "dagster/asset_partition_range_start" in tags:
        first, last = tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]
        return first if first == last else f"{first}..{last}"
    return tags.get("dagster/partition")


@dg.run_failure_sensor(
    name="run_failure_alerts",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records every failed run in the alerts file (and webhook).",
)
def run_failure_alerts(context: dg.RunFailureSensorContext, alerts: AlertSink):
    run = context.dagster_run
    alerts.send(
        "run_failure",
        f"{run.job_name} run {run.run_id[:8]} failed: {context.failure_event.message}",
        job=run.job_name,
        run_id=run.run_id,
        tags={k: v for k, v in run.tags.items() if not k.startswith(".dagster")},
    )


@dg.sensor(
    name="check_failure_alerts",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Records every failed blocking check (severity ERROR) in the alerts file.",
)
def check_failure_alerts(context: dg.SensorEvaluationContext, alerts: AlertSink):
    """Reads every failed check execution since the cursor (the largest execution id seen), not
    only the latest, so no failure between two ticks is missed."""
    seen = int(context.cursor) if context.cursor else 0
    storage = context.instance.event_log_storage
    failures = [
        record
        for check_key in context.repository_def.asset_graph.asset_check_keys
        for record in storage.get_asset_check_execution_history(
            check_key, limit=100, status={AssetCheckExecutionRecordStatus.FAILED}
        )
        if record.id > seen and record.event is not None
    ]
    for record in sorted(failures, key=lambda r: r.id):
        evaluation = record.event.dagster_event.event_specific_data
        if evaluation.blocking and evaluation.severity == dg.AssetCheckSeverity.ERROR:
            days = evaluation.partition or _run_days(context.instance.get_run_by_id(record.run_id))
            where = evaluation.asset_key.to_user_string() + (f" [{days}]" if days else "")
            alerts.send(
                "check_failure",
                f"blocking check {evaluation.check_name} failed on {where}:"
                f" {evaluation.description or 'see its metadata'}",
                asset=evaluation.asset_key.to_user_string(),
                check=evaluation.check_name,
                days=days,
                run_id=record.run_id,
            )
        seen = max(seen, record.id)
    context.update_cursor(str(seen))


_TRAINING_INPUTS = {FEATURES, FRAUD_LABELS}
_IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
                dg.DagsterRunStatus.CANCELING]


def _runs_writing_training_inputs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Runs not finished that materialise transaction_features or fraud_labels: a UI backfill
    or Materialize (its asset selection), ``ingest_job`` or ``daily_job`` (whole jobs, whose runs
    carry no asset selection)."""
    return [run for run in instance.get_runs(filters=dg.RunsFilter(statuses=_IN_PROGRESS))
            if run.job_name in (ingest_job.name, daily_job.name)
            or _TRAINING_INPUTS & set(run.asset_selection or ())]


@dg.sensor(
    name="drift_sensor",
    job=retrain_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Launches retrain_job when a new drift_report day passes the DriftPolicy"
    " thresholds, once the post-drift labels have matured (deferred until then): one run per"
    " trigger, then a cooldown.",
)
def drift_sensor(
    context: dg.SensorEvaluationContext, drift_policy: DriftPolicy, daily_tables: DailyTables,
    alerts: AlertSink,
):
    """Reads every drift_report materialisation since its cursor (an ``@asset_sensor`` would see
    only the newest per tick, and a backfill makes many at once), in order.

    Labels arrive late: a retrain for drift seen on day X is *deferred* (kept in the cursor, the
    tick says until when) until fraud_labels reaches ``retrain_as_of(X)``, so that the training
    window holds matured post-drift labels; it is then launched once, as of the newest labelled
    day. Drift seen while a retrain is deferred, or in the cooldown after one, launches nothing."""
    state = json.loads(context.cursor) if context.cursor else {}
    result = context.instance.fetch_materializations(
        DRIFT_REPORT, limit=500, cursor=state.get("events"), ascending=True
    )
    last_trigger, pending = state.get("last_trigger_day"), state.get("pending")
    days = sorted({record.partition_key for record in result.records if record.partition_key})
    reports, missing = daily_tables.read_existing_days(
        DRIFT_REPORT, [dt.date.fromisoformat(d) for d in days]) if days else (None, [])
    if missing:
        # A report file deleted (or moved) after it was materialised: say so once and go on
        # with the others; the cursor moves past it (re-materialise the day to judge it).
        alerts.send(
            "drift_report_missing",
            f"drift_sensor: the drift_report file of {len(missing)} day(s) is missing, not judged:"
            f" {', '.join(d.isoformat() for d in missing[:10])}",
            days=[d.isoformat() for d in missing],
        )
    said = []
    for report in (reports.sort("day").iter_rows(named=True) if reports is not None and reports.height
                   else ()):
        reason = drift_policy.reason(report)
        day = report["day"]
        if reason is None:
            continue
        if pending:
            said.append(f"{day}: {reason}; a retrain for {pending['day']} is already deferred")
        elif last_trigger and day < dt.date.fromisoformat(last_trigger) + dt.timedelta(
                days=drift_policy.cooldown_days):
            said.append(f"{day}: {reason}; in the cooldown after the retrain as of {last_trigger}")
        else:
            pending = {"day": day.isoformat(), "until": drift_policy.retrain_as_of(day).isoformat(),
                       "reason": reason[:250]}
    requests = []
    if pending:
        try:
            labelled = newest_labelled_day(context.instance)
        except dg.Failure:
            labelled = None
        writing = _runs_writing_training_inputs(context.instance) if (
            labelled is not None and labelled >= dt.date.fromisoformat(pending["until"])) else []
        if writing:
            # fraud_labels reached the day inside a run that is still going (a backfill's one
            # run stores fraud_labels minutes before its transaction_features and drift_report):
            # the retrain would read days that run has not written yet.
            said.append(
                f"drift on {pending['day']}: fraud_labels reached {labelled}; the retrain waits"
                f" for run {', '.join(r.run_id[:8] for r in writing)} to finish, which still"
                " writes transaction_features or fraud_labels")
        elif labelled is not None and labelled >= dt.date.fromisoformat(pending["until"]):
            requests.append(dg.RunRequest(
                run_key=f"drift-{pending['day']}",
                run_config=dg.RunConfig(
                    ops={"fraud_model": FraudModelConfig(as_of=labelled.isoformat())}),
                tags={"fraud/trigger": "drift_sensor", "fraud/drift_day": pending["day"],
                      "fraud/deferred_until": pending["until"], "fraud/as_of": labelled.isoformat(),
                      "fraud/reason": pending["reason"]},
            ))
            last_trigger, pending = labelled.isoformat(), None
        else:
            said.append(
                f"drift on {pending['day']} ({pending['reason']}): retrain deferred until"
                f" fraud_labels reaches {pending['until']}, when the training window holds"
                f" {drift_policy.min_post_drift_training_days} post-drift days of matured labels"
                f" (newest labelled day: {labelled or 'none'})")
    for line in said:
        context.log.info(line)
    cursor = json.dumps({"events": result.cursor if days else state.get("events"),
                         "last_trigger_day": last_trigger, "pending": pending})
    return dg.SensorResult(
        run_requests=requests, cursor=cursor,
        skip_reason=None if requests else dg.SkipReason(
            "; ".join(said[-3:]) or "no new drift_report day passes the DriftPolicy thresholds"))
