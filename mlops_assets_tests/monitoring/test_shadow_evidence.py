"""The shadow figures a reviewer sees: the approval checklist's view and the evaluation of record read
the latest measured day's comparisons in which the version was the shadow."""

from __future__ import annotations

from pathlib import Path

from mlops_assets.monitoring.shadow import ShadowComparison, shadow_evidence, write_shadow_report


def _comparison(shadow_version: str, agreement: float) -> ShadowComparison:
    return ShadowComparison("m", "1", shadow_version, pairs=400, agreement=agreement, labelled=0,
                            champion_accuracy=None, shadow_accuracy=None, test=None, reason="no outcomes yet")


def test_shadow_evidence_is_the_versions_own_comparisons_of_the_latest_day(tmp_path: Path) -> None:
    assert shadow_evidence(tmp_path, "m", "2") is None  # never measured
    write_shadow_report(tmp_path, "2026-12-04", [_comparison("2", 0.93), _comparison("3", 0.71)])
    evidence = shadow_evidence(tmp_path, "m", "2")
    assert evidence is not None and evidence["day"] == "2026-12-04"
    assert [(c["shadow_version"], c["agreement"]) for c in evidence["comparisons"]] == [("2", 0.93)]
    assert shadow_evidence(tmp_path, "m", "4") is None  # measured, but this version was never the shadow
    assert shadow_evidence(tmp_path, "other", "2") is None
