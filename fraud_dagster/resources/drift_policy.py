"""When drift reports launch a retrain: the thresholds ``drift_sensor`` applies."""

import datetime as dt

import dagster as dg
from pydantic import Field


class DriftPolicy(dg.ConfigurableResource):
    """When drift reports launch a retrain (the drift_sensor's thresholds)."""

    min_share_drifted_columns: float = Field(
        default=0.15,
        description="Retrain when a day has at least this share of drifted columns (the"
        " simulator's drift moves 18-36 % of them; clean days stay at 0 %).")
    max_average_precision_drop: float = Field(
        default=0.25,
        description="Retrain when the champion's average precision on a freshly labelled day is"
        " this much below its test average precision (concept drift).")
    cooldown_days: int = Field(
        default=14,
        description="After a retrain is launched (as of a day), drifted days up to this many days"
        " later do not launch another one (the retrained model needs that long to be judged).")
    min_post_drift_training_days: int = Field(
        default=7,
        description="A retrain for drift seen on day X waits until its training window holds this"
        " many days from X on with matured labels (the default: the whole 7-day window).")

    def retrain_as_of(self, drift_day: dt.date) -> dt.date:
        """The first ``as_of`` whose training window ends ``min_post_drift_training_days - 1``
        days after ``drift_day`` (fraud_model's default windows)."""
        # Imported here: the assets import this package for their resources.
        from fraud_dagster.assets.model import FraudModelConfig, plan_of

        plan = plan_of(FraudModelConfig(), drift_day, folds=1)
        return drift_day + (drift_day - plan.training_end) + dt.timedelta(
            days=self.min_post_drift_training_days - 1)

    def reason(self, report: dict) -> str | None:
        reasons = []
        if report["share_drifted_columns"] >= self.min_share_drifted_columns:
            reasons.append(
                f"{report['share_drifted_columns']:.0%} of columns drifted"
                f" (>= {self.min_share_drifted_columns:.0%}): {report['drifted_columns']}"
            )
        test_ap, day_ap = report.get("champion_test_average_precision"), report.get(
            "labelled_average_precision")
        if test_ap is not None and day_ap is not None:
            if test_ap - day_ap > self.max_average_precision_drop:
                reasons.append(
                    f"average precision on {report['labelled_day']} fell to {day_ap:.3f} from the"
                    f" champion's test {test_ap:.3f} (drop > {self.max_average_precision_drop})"
                )
        return "; ".join(reasons) or None
