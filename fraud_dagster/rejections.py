"""``landing_rejections_job``: carries out ``landing_sensor``'s decisions about the files it will not
ingest, since the sensor itself changes nothing. Each file is moved to ``_rejected/`` beside its
``.reason.txt`` (or, for a hidden or temporary name, left where it is) and reported once in the
alerts file; a file that changed since the decision is left for the sensor to decide again."""

import dagster as dg
from pydantic import Field

from fraud_dagster.resources import AlertSink, LandingSource, TransactionSource


class LandingRejection(dg.Config):
    name: str = Field(description="File name at the top of the landing folder.")
    signature: str = Field(description="Its lstat signature when the sensor decided (size, mtime,"
                           " inode): a file changed since is left for the sensor.")
    reason: str = Field(description="Why it is not ingested (written beside it and alerted).")
    action: str = Field(default="reject", description="`reject` (move to `_rejected/`) or"
                        " `report` (leave in place).")
    folder: str = Field(default="", description="`labels` for a label file (`<landing>/labels/`),"
                        " else empty: the landing folder.")


class LandingRejectionsConfig(dg.Config):
    files: list[LandingRejection] = Field(
        default=[], description="Set by `landing_sensor`: the files it will not take.")


@dg.op(description="Moves the landing files the sensor will not take to _rejected/ with their"
       " reason, and records each in the alerts file.")
def reject_landing_files(
    context: dg.OpExecutionContext,
    config: LandingRejectionsConfig,
    transaction_source: TransactionSource,
    alerts: AlertSink,
) -> None:
    if not isinstance(transaction_source, LandingSource):
        raise dg.Failure("FRAUD_SOURCE is not 'landing': there is no landing folder")
    for file in config.files:
        folder = transaction_source.folder()
        folder = folder.labels() if file.folder == folder.LABELS else folder
        if file.action == "report":
            alerts.send("landing_ignored", f"landing file {file.name} left in place: {file.reason}",
                        file=file.name, reason=file.reason, folder=str(folder.root))
            continue
        target = folder.reject(file.name, file.signature, file.reason)
        if target is None:
            context.log.info(f"{file.name} changed or went away since the sensor decided; left")
            continue
        alerts.send("landing_rejected", f"landing file {file.name} rejected: {file.reason}",
                    file=file.name, reason=file.reason, moved_to=str(target))


@dg.job(description="Rejects (or reports) the landing files landing_sensor will not ingest.")
def landing_rejections_job():
    reject_landing_files()
