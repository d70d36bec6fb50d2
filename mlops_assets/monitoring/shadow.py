"""Champion against shadow on identical requests: agreement, McNemar's test and the paired IC test.

The prediction-log writer process scores every served vector with the shadow alias's model too
(``serving/inference/predlog_shadow.py``) and writes those rows as the sibling ``shadow-`` segment
stream: the same ``request_id`` and ``row``, ``variant="shadow"``. Pairing a served row with its
shadow row by ``(request_id, row)`` gives two predictions on one and the same feature vector, so the
comparison is paired and needs no assumption about the traffic mix:

* **agreement**: the share of pairs whose predicted labels are equal (all pairs, labelled or not; for
  a regression model, whose predictions are returns, the share whose predicted signs are equal);
* **McNemar's test** (``statsmodels.stats.contingency_tables.mcnemar``) on the pairs whose outcome is
  known (``live_outcomes.join_outcomes``' ``label``, ``label_status == "labelled"``): the 2x2 table of
  champion right/wrong against shadow right/wrong; only the discordant cells ``b`` (champion right,
  shadow wrong) and ``c`` count. Exact binomial when ``b + c < 25``, else the chi-square with
  continuity correction. Two-sided: H0 says both are right equally often on these requests. Only for
  classifiers: a regression model's predictions are not labels, so it gets no McNemar (the reason says so);
* **the paired IC test** (:class:`IcTest`) on the same labelled pairs: the information coefficient of
  each model's score with the realised forward return, their difference and its date-block bootstrap
  interval. The statistics are judgement, a layer above this one (``evaluation.shadow_ic.paired_ic_test``),
  so the caller passes the test in (``compare_shadow(..., ic_test=...)``); without it ``ic_test`` is None.

The model's task is read off its logged outputs (:func:`model_task`): a non-integral prediction is a
regression model's; integral predictions in {0, 1} a binary classifier's, other integral ones a
multiclass one's. Without labelled pairs there is no test (``test`` None, the reason says why).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from mlops_assets.data.schema import ENTITY_KEY
from mlops_assets.features.datasets import FWD_RETURN, LABEL
from mlops_assets.monitoring.served import SHADOW_PREFIX, read_closed_segments

KEY = ["request_id", "row"]
# the labelled pairs handed to the IC test: symbol, decision date (request date without one) and realised value
SYMBOL, DATE, REALISED = "__symbol", "__date", "__realised"
EXACT_BELOW = 25  # discordant pairs under which McNemar's test is the exact binomial one
REPORT_NAME = "shadow-{name}.json"


@dataclass(frozen=True)
class McNemar:
    champion_right_shadow_wrong: int  # b
    champion_wrong_shadow_right: int  # c
    both_right: int
    both_wrong: int
    statistic: float
    p_value: float
    exact: bool

    @property
    def discordant(self) -> int:
        return self.champion_right_shadow_wrong + self.champion_wrong_shadow_right


def _finite_or_none(out: dict[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in out.items()}


@dataclass(frozen=True)
class IcTest:
    """Paired bootstrap of IC(shadow) - IC(champion) on the same labelled requests.

    ``method``: ``cross_sectional`` (mean of per-date Spearman ICs over the symbols) or ``time_series``
    (per symbol, Spearman over its dates; mean over symbols); ``score``: ``probability`` (binary) or
    ``prediction`` (regression); ``realised``: ``fwd_return`` or ``label``. ``ci_low``, ``ci_high``
    and ``p_value`` are None when there was no test (too few dates, an undefined IC): ``reason`` says why.
    """

    method: str | None
    score: str
    realised: str
    n_dates: int
    n_pairs: int
    champion_ic: float | None
    shadow_ic: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    level: float
    p_value: float | None
    n_boot: int
    block_length: int | None
    min_dates: int
    reason: str

    @property
    def tested(self) -> bool:
        return self.p_value is not None

    def to_dict(self) -> dict[str, Any]:
        return _finite_or_none(asdict(self))

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> IcTest:
        return cls(**{k: value.get(k) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ShadowComparison:
    """One champion version against one shadow version on the requests both scored."""

    model_name: str
    champion_version: str
    shadow_version: str
    pairs: int
    agreement: float | None
    labelled: int
    champion_accuracy: float | None
    shadow_accuracy: float | None
    test: McNemar | None
    reason: str
    task: str | None = None  # binary, multiclass or regression (model_task)
    ic_test: IcTest | None = None

    def to_dict(self) -> dict[str, Any]:
        out = _finite_or_none(asdict(self))
        if self.test is not None:
            out["test"]["discordant"] = self.test.discordant
        out["ic_test"] = self.ic_test.to_dict() if self.ic_test is not None else None
        return out

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> ShadowComparison:
        test, ic = value.get("test"), value.get("ic_test")
        if test is not None:
            test = McNemar(**{k: test[k] for k in McNemar.__dataclass_fields__})
        return cls(**{**{k: value.get(k) for k in cls.__dataclass_fields__}, "test": test,
                      "ic_test": IcTest.from_dict(ic) if ic is not None else None})


def mcnemar_test(champion_right: Any, shadow_right: Any) -> McNemar:
    """McNemar's test of two paired boolean arrays (champion right, shadow right)."""
    import numpy as np
    from statsmodels.stats.contingency_tables import mcnemar

    a, s = np.asarray(champion_right, dtype=bool), np.asarray(shadow_right, dtype=bool)
    both, b = int((a & s).sum()), int((a & ~s).sum())
    c, neither = int((~a & s).sum()), int((~a & ~s).sum())
    exact = b + c < EXACT_BELOW
    result = mcnemar([[both, b], [c, neither]], exact=exact, correction=True)
    return McNemar(b, c, both, neither, float(result.statistic), float(result.pvalue), exact)


def pair_rows(served: pl.DataFrame, shadow: pl.DataFrame) -> pl.DataFrame:
    """Served rows joined with their shadow rows on ``(request_id, row)`` (``*_shadow`` columns)."""
    cols = [*KEY, "model_name", "model_version", "prediction", "probability"]
    left = served.filter(pl.col("variant") != "shadow") if "variant" in served.columns else served
    left = left.select([c for c in cols if c in left.columns])
    right = shadow.select(*KEY, pl.col("model_version").alias("shadow_version"),
                          pl.col("prediction").alias("prediction_shadow"),
                          pl.col("probability").alias("probability_shadow"))
    return left.join(right, on=KEY, how="inner")


IcTestFn = Callable[[pl.DataFrame, str, str], IcTest]
"""(one version pair's labelled pairs, task, realised column name) -> :class:`IcTest`."""


def model_task(pairs: pl.DataFrame) -> str:
    """``regression`` when a prediction of either model is not an integer, ``binary`` when all are 0 or 1
    (also when none is known), else ``multiclass``."""
    preds = pl.concat([pairs["prediction"].cast(pl.Float64), pairs["prediction_shadow"].cast(pl.Float64)])
    preds = preds.drop_nulls().drop_nans()
    if (preds != preds.round(0)).any():
        return "regression"
    return "binary" if preds.is_in([0.0, 1.0]).all() else "multiclass"


def _labelled(outcomes: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """The labelled outcomes' label, realised value (the forward return when the join gives it, else the
    label), symbol and decision date (the request's date without one), keyed by ``(request_id, row)``."""
    cols = outcomes.columns
    realised = FWD_RETURN if FWD_RETURN in cols else LABEL
    when = next((c for c in ("decision_date", "date") if c in cols), None)
    known = outcomes.filter(pl.col("label_status") == "labelled").select(
        *KEY, pl.col(LABEL).alias("__y"), pl.col(realised).cast(pl.Float64).alias(REALISED),
        (pl.col(ENTITY_KEY).cast(pl.String) if ENTITY_KEY in cols else pl.lit("")).alias(SYMBOL),
        (pl.col(when) if when else pl.lit(None, dtype=pl.Date)).alias(DATE))
    return known, realised


def compare_shadow(served: pl.DataFrame, shadow: pl.DataFrame, outcomes: pl.DataFrame | None = None, *,
                   ic_test: IcTestFn | None = None) -> list[ShadowComparison]:
    """One :class:`ShadowComparison` per (model, champion version, shadow version) (module docstring).

    ``served`` and ``shadow``: prediction-log rows (``read_closed_segments``, the latter with
    ``prefix=SHADOW_PREFIX``); ``outcomes``: ``live_outcomes.join_outcomes`` rows of the served ones
    (``request_id``, ``row``, ``label``, ``label_status``; ``fwd_return``, ``symbol`` and
    ``decision_date`` for the IC test), or None before any outcome is known; ``ic_test``: the paired IC
    test run on each version pair's labelled pairs (``evaluation.shadow_ic.paired_ic_test``), or None.
    """
    pairs, realised = pair_rows(served, shadow), LABEL
    if outcomes is not None and not outcomes.is_empty():
        known, realised = _labelled(outcomes)
        pairs = pairs.join(known, on=KEY, how="left")
    else:
        pairs = pairs.with_columns(pl.lit(None, dtype=pl.Float64).alias("__y"))
    out = []
    groups = pairs.group_by("model_name", "model_version", "shadow_version") if pairs.height else []
    for (name, champion, challenger), part in sorted(groups, key=lambda kv: tuple(map(str, kv[0]))):
        task = model_task(part)
        same = (part["prediction"].sign() == part["prediction_shadow"].sign() if task == "regression"
                else part["prediction"] == part["prediction_shadow"])
        agree = float(same.mean())
        labelled = part.filter(pl.col("__y").is_not_null())
        test, acc_c, acc_s, ic = None, None, None, None
        if not labelled.height:
            reason = "no labelled pair yet: the paired tests wait for outcomes (live_performance)"
        else:
            if task == "regression":
                reasons = [f"no McNemar on {labelled.height} labelled pairs: a regression model's predictions "
                           "are returns, not labels, so equal predictions mean nothing"]
            else:
                y = labelled["__y"].to_numpy()
                right_c = labelled["prediction"].to_numpy() == y
                right_s = labelled["prediction_shadow"].to_numpy() == y
                acc_c, acc_s = float(right_c.mean()), float(right_s.mean())
                test = mcnemar_test(right_c, right_s)
                reasons = [f"McNemar ({'exact' if test.exact else 'chi-square'}) on {labelled.height} labelled "
                           f"pairs, {test.discordant} discordant: p={test.p_value:.3g}"]
            if ic_test is not None and task == "multiclass":
                reasons.append("no IC test: a multiclass model logs its predicted class's probability, "
                               "not a directional score")
            elif ic_test is not None:
                ic = ic_test(labelled, task, realised)
                reasons.append(f"IC: {ic.reason}")
            reason = "; ".join(reasons)
        out.append(ShadowComparison(str(name), str(champion), str(challenger), part.height, agree, labelled.height,
                                    acc_c, acc_s, test, reason, task, ic))
    return out


def read_shadow_rows(log_dir: str | Path) -> pl.DataFrame:
    """Every closed shadow segment of the prediction log (no feature columns)."""
    return read_closed_segments(log_dir, prefix=SHADOW_PREFIX, features=False)


def shadow_from_log(log_dir: str | Path, model_name: str) -> list[ShadowComparison]:
    """Agreement of ``model_name``'s champion and shadow over the whole retained log (no outcomes)."""
    served = read_closed_segments(log_dir, features=False)
    shadow = read_shadow_rows(log_dir)
    if served.is_empty() or shadow.is_empty():
        return []
    return compare_shadow(served.filter(pl.col("model_name") == model_name),
                          shadow.filter(pl.col("model_name") == model_name))


def comparisons_table(comparisons: list[ShadowComparison]) -> pl.DataFrame:
    """A flat table for asset metadata and reports: McNemar's test (``mcnemar_p_value``) and the paired IC
    test (``ic_*``: method, dates, both ICs, the difference shadow - champion, its interval, p-value)."""
    schema = {"model_name": pl.String(), "champion_version": pl.String(), "shadow_version": pl.String(),
              "task": pl.String(), "pairs": pl.Int64(), "agreement": pl.Float64(), "labelled": pl.Int64(),
              "champion_accuracy": pl.Float64(), "shadow_accuracy": pl.Float64(), "discordant": pl.Int64(),
              "mcnemar_p_value": pl.Float64(), "ic_method": pl.String(), "ic_dates": pl.Int64(),
              "champion_ic": pl.Float64(), "shadow_ic": pl.Float64(), "ic_difference": pl.Float64(),
              "ic_ci_low": pl.Float64(), "ic_ci_high": pl.Float64(), "ic_p_value": pl.Float64()}
    rows = []
    for c in comparisons:
        ic = c.ic_test.to_dict() if c.ic_test is not None else {}
        rows.append({"model_name": c.model_name, "champion_version": c.champion_version,
                     "shadow_version": c.shadow_version, "task": c.task, "pairs": c.pairs, "agreement": c.agreement,
                     "labelled": c.labelled, "champion_accuracy": c.champion_accuracy,
                     "shadow_accuracy": c.shadow_accuracy, "discordant": c.test.discordant if c.test else None,
                     "mcnemar_p_value": c.test.p_value if c.test else None, "ic_method": ic.get("method"),
                     "ic_dates": ic.get("n_dates"), "champion_ic": ic.get("champion_ic"),
                     "shadow_ic": ic.get("shadow_ic"), "ic_difference": ic.get("difference"),
                     "ic_ci_low": ic.get("ci_low"), "ic_ci_high": ic.get("ci_high"), "ic_p_value": ic.get("p_value")})
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def report_path(reports_dir: str | Path, model_name: str) -> Path:
    return Path(reports_dir) / "live_performance" / REPORT_NAME.format(name=model_name)


def write_shadow_report(reports_dir: str | Path, day: str, comparisons: list[ShadowComparison],
                        since: str | None = None) -> list[Path]:
    """The read-model the management API serves: per model, the latest measured day's comparisons
    (with the paired tests; over the requests from ``since`` to ``day`` when given), replaced atomically."""
    from mlops_assets.features.atomic import atomic_write_bytes

    written = []
    for name in sorted({c.model_name for c in comparisons}):
        path = report_path(reports_dir, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"model_name": name, "day": day, "since": since or day,
                "comparisons": [c.to_dict() for c in comparisons if c.model_name == name]}
        atomic_write_bytes(path, json.dumps(body, indent=1).encode())
        written.append(path)
    return written


def read_shadow_report(reports_dir: str | Path, model_name: str) -> dict[str, Any] | None:
    path = report_path(reports_dir, model_name)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def shadow_evidence(reports_dir: str | Path, model_name: str, version: str | int) -> dict[str, Any] | None:
    """What live traffic says about ``version`` as a shadow of the champion, for the approval checklist
    and the evaluation report: the latest measured day's comparisons in which it was the shadow
    (agreement on identical requests, each side's accuracy, McNemar's test and the paired IC test once
    outcomes arrived); None when it was never scored in shadow."""
    report = read_shadow_report(reports_dir, model_name)
    if report is None:
        return None
    mine = [c for c in report.get("comparisons", []) if str(c.get("shadow_version")) == str(version)]
    return {"day": report.get("day"), "since": report.get("since"), "comparisons": mine} if mine else None
