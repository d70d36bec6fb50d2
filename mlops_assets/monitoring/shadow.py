"""Champion against shadow on identical requests: agreement, and McNemar's test once outcomes arrive.

The prediction-log writer process scores every served vector with the shadow alias's model too
(``serving/inference/predlog_shadow.py``) and writes those rows as the sibling ``shadow-`` segment
stream: the same ``request_id`` and ``row``, ``variant="shadow"``. Pairing a served row with its
shadow row by ``(request_id, row)`` gives two predictions on one and the same feature vector, so the
comparison is paired and needs no assumption about the traffic mix:

* **agreement**: the share of pairs whose predicted labels are equal (all pairs, labelled or not);
* **McNemar's test** (``statsmodels.stats.contingency_tables.mcnemar``) on the pairs whose outcome is
  known (``live_outcomes.join_outcomes``' ``label``, ``label_status == "labelled"``): the 2x2 table of
  champion right/wrong against shadow right/wrong; only the discordant cells ``b`` (champion right,
  shadow wrong) and ``c`` count. Exact binomial when ``b + c < 25``, else the chi-square with
  continuity correction. Two-sided: H0 says both are right equally often on these requests.

Without labelled pairs there is no test (``test`` None, the reason says why).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from mlops_assets.features.datasets import LABEL
from mlops_assets.monitoring.served import SHADOW_PREFIX, read_closed_segments

KEY = ["request_id", "row"]
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

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, float) and not math.isfinite(v):
                out[k] = None
        if self.test is not None:
            out["test"]["discordant"] = self.test.discordant
        return out

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> ShadowComparison:
        test = value.get("test")
        if test is not None:
            test = McNemar(**{k: test[k] for k in McNemar.__dataclass_fields__})
        return cls(**{**{k: value.get(k) for k in cls.__dataclass_fields__}, "test": test})


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


def compare_shadow(served: pl.DataFrame, shadow: pl.DataFrame,
                   outcomes: pl.DataFrame | None = None) -> list[ShadowComparison]:
    """One :class:`ShadowComparison` per (model, champion version, shadow version) (module docstring).

    ``served`` and ``shadow``: prediction-log rows (``read_closed_segments``, the latter with
    ``prefix=SHADOW_PREFIX``); ``outcomes``: ``live_outcomes.join_outcomes`` rows of the served ones
    (``request_id``, ``row``, ``label``, ``label_status``), or None before any outcome is known.
    """
    pairs = pair_rows(served, shadow)
    if outcomes is not None and not outcomes.is_empty():
        known = outcomes.filter(pl.col("label_status") == "labelled").select(*KEY, pl.col(LABEL).alias("__y"))
        pairs = pairs.join(known, on=KEY, how="left")
    else:
        pairs = pairs.with_columns(pl.lit(None, dtype=pl.Float64).alias("__y"))
    out = []
    groups = pairs.group_by("model_name", "model_version", "shadow_version") if pairs.height else []
    for (name, champion, challenger), part in sorted(groups, key=lambda kv: tuple(map(str, kv[0]))):
        agree = float((part["prediction"] == part["prediction_shadow"]).mean())
        labelled = part.filter(pl.col("__y").is_not_null())
        test, acc_c, acc_s = None, None, None
        if labelled.height:
            y = labelled["__y"].to_numpy()
            right_c = labelled["prediction"].to_numpy() == y
            right_s = labelled["prediction_shadow"].to_numpy() == y
            acc_c, acc_s = float(right_c.mean()), float(right_s.mean())
            test = mcnemar_test(right_c, right_s)
            reason = (f"McNemar ({'exact' if test.exact else 'chi-square'}) on {labelled.height} labelled pairs, "
                      f"{test.discordant} discordant: p={test.p_value:.3g}")
        else:
            reason = "no labelled pair yet: the paired test waits for outcomes (live_performance)"
        out.append(ShadowComparison(str(name), str(champion), str(challenger), part.height, agree, labelled.height,
                                    acc_c, acc_s, test, reason))
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
    """A flat table for asset metadata and reports."""
    schema = {"model_name": pl.String(), "champion_version": pl.String(), "shadow_version": pl.String(),
              "pairs": pl.Int64(), "agreement": pl.Float64(), "labelled": pl.Int64(),
              "champion_accuracy": pl.Float64(), "shadow_accuracy": pl.Float64(), "discordant": pl.Int64(),
              "p_value": pl.Float64()}
    rows = [{"model_name": c.model_name, "champion_version": c.champion_version, "shadow_version": c.shadow_version,
             "pairs": c.pairs, "agreement": c.agreement, "labelled": c.labelled,
             "champion_accuracy": c.champion_accuracy, "shadow_accuracy": c.shadow_accuracy,
             "discordant": c.test.discordant if c.test else None, "p_value": c.test.p_value if c.test else None}
            for c in comparisons]
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def report_path(reports_dir: str | Path, model_name: str) -> Path:
    return Path(reports_dir) / "live_performance" / REPORT_NAME.format(name=model_name)


def write_shadow_report(reports_dir: str | Path, day: str, comparisons: list[ShadowComparison]) -> list[Path]:
    """The read-model the management API serves: per model, the latest measured day's comparisons
    (with the paired test), replaced atomically."""
    from mlops_assets.features.atomic import atomic_write_bytes

    written = []
    for name in sorted({c.model_name for c in comparisons}):
        path = report_path(reports_dir, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"model_name": name, "day": day,
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
    (agreement on identical requests, each side's accuracy, McNemar's test once outcomes arrived);
    None when it was never scored in shadow."""
    report = read_shadow_report(reports_dir, model_name)
    if report is None:
        return None
    mine = [c for c in report.get("comparisons", []) if str(c.get("shadow_version")) == str(version)]
    return {"day": report.get("day"), "comparisons": mine} if mine else None
