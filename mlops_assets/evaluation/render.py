"""Markdown rendering of an evaluation report (for the Markdown file logged to MLflow and for
Dagster markdown metadata). Images are referenced by relative file name, not inlined, so the
file stays small; use :func:`mlops_assets.evaluation.plots.markdown_image` to inline one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from mlops_assets.evaluation.serialize import fmt

if TYPE_CHECKING:
    from mlops_assets.evaluation.report import EvaluationReport


def frame_to_markdown(df: pl.DataFrame, digits: int = 4) -> str:
    """A GitHub-flavoured markdown table of ``df`` (numbers formatted, missing as ``n/a``)."""
    if df.width == 0:
        return "_(empty)_\n"
    header = "| " + " | ".join(df.columns) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    rows = [
        "| " + " | ".join(fmt(v, digits).replace("|", "\\|") for v in row) + " |" for row in df.iter_rows()
    ]
    return "\n".join([header, sep, *rows]) + "\n"


def _section_backtest(report: EvaluationReport) -> list[str]:
    bt = report.backtest
    lines = [
        "## Backtest",
        "",
        f"Mode `{bt.mode}`, costs {bt.cost_bps:g} bps per unit of position change, "
        f"threshold {bt.threshold:g}, "
        f"horizon {bt.horizon} (forward returns divided by the horizon), rows without a realised "
        f"return dropped: {bt.n_rows_dropped}.",
        "",
    ]
    for s in bt.scenarios:
        span = f"{s.start} to {s.end}" if s.start else "no data"
        vol = f", market volatility {fmt(s.market_volatility)}" if s.market_volatility is not None else ""
        lines += [f"### {s.name} ({s.kind}: {span}{vol})", "", frame_to_markdown(s.table)]
    if "equity_curve" in report.plot_files:
        lines += [f"![equity curve]({report.plot_files['equity_curve']})", ""]
    return lines


def _section_fairness(report: EvaluationReport) -> list[str]:
    fr = report.fairness
    if fr is None:
        return ["## Fairness", "", "_not audited_", ""]
    lines = [
        f"## Fairness by `{fr.sensitive_name}` (overall: {fr.severity})", "", frame_to_markdown(fr.by_group)
    ]
    lines += ["| disparity | value | threshold | severity |", "| --- | --- | --- | --- |"]
    graded = {c.metric: c for c in fr.checks}
    for name, value in fr.disparities.items():
        c = graded.get(name)
        threshold, severity = (fmt(c.threshold), c.severity) if c else ("-", "-")
        lines.append(f"| {name} | {fmt(value)} | {threshold} | {severity} |")
    if fr.small_groups:
        lines += ["", f"Small groups (noisy rates): {', '.join(fr.small_groups)}"]
    return [*lines, ""]


def _section_explanation(report: EvaluationReport) -> list[str]:
    ex = report.explanation
    if ex is None:
        return ["## Explainability", "", "_not computed_", ""]
    note = " (stopped at the time budget)" if ex.truncated else ""
    lines = [
        "## Explainability (SHAP, kernel explainer)",
        "",
        f"{ex.n_rows} rows explained in {ex.elapsed_seconds:.1f} s{note}; base value {fmt(ex.base_value)}.",
        "",
        frame_to_markdown(ex.global_importance),
    ]
    if "shap_summary" in report.plot_files:
        lines += [f"![SHAP summary]({report.plot_files['shap_summary']})", ""]
    return lines


def _section_ab(report: EvaluationReport) -> list[str]:
    ab = report.ab
    if ab is None:
        return ["## A/B vs champion", "", "_no champion_", ""]
    (both, a_only), (b_only, neither) = ab.table
    return [
        "## A/B vs champion (A = champion, B = candidate)",
        "",
        f"**{ab.verdict}** - {ab.reason}",
        "",
        "| | B right | B wrong |", "| --- | --- | --- |",
        f"| **A right** | {both} | {a_only} |", f"| **A wrong** | {b_only} | {neither} |",
        "",
        f"McNemar ({'exact' if ab.exact else 'chi-square, continuity-corrected'}): statistic "
        f"{fmt(ab.mcnemar_statistic)}, p = {fmt(ab.mcnemar_p_value)}; accuracy A {fmt(ab.accuracy_a)}, "
        f"B {fmt(ab.accuracy_b)}, difference {fmt(ab.accuracy_difference)}.",
        "",
        f"Sharpe A {fmt(ab.sharpe_a)}, B {fmt(ab.sharpe_b)}, difference {fmt(ab.sharpe_difference)} with "
        f"{int((1 - ab.alpha) * 100)} % CI [{fmt(ab.sharpe_ci_low)}, {fmt(ab.sharpe_ci_high)}] "
        f"({ab.n_boot} circular-block bootstrap resamples of {ab.n_days} days, "
        f"block length {ab.block_length}).",
        "",
    ]


def _section_skill(report: EvaluationReport) -> list[str]:
    sk = report.skill
    if sk is None:
        return ["## Skill or luck", "", "_no out-of-sample assessment_", ""]
    iv, d, ic = sk.interval, sk.dsr, sk.ic
    best = sk.best_baseline()
    baselines = ", ".join(f"{k} {fmt(v)}" for k, v in sk.baselines.items())
    lines = [
        f"## Skill or luck ({sk.mode.replace('_', '-')})", "", sk.note, "",
        (f"**{sk.metric}** pooled out of sample: {fmt(iv.value)}, {iv.level:.0%} interval "
         f"[{fmt(iv.low)}, {fmt(iv.high)}] ({iv.n_boot} circular-block bootstrap resamples of whole dates, "
         f"block {iv.block_length} dates, {iv.n_dates} dates, {iv.n_rows} rows). Baselines on the same rows: "
         f"{baselines}" + (f"; best `{best[0]}`." if best else ".")), "",
        frame_to_markdown(sk.per_fold), "",
        (f"**Information coefficient** ({ic.method}): mean {fmt(ic.mean)}, t-stat {fmt(ic.t_stat)}, "
         f"ICIR {fmt(ic.icir)} over {ic.n} values. {ic.note}."), "",
        (f"**Sharpe ratio** of the strategy: {fmt(d.sharpe_annualised)} annualised ({fmt(d.sharpe)} per day, "
         f"{d.n_returns} days, skew {fmt(d.skew)}, kurtosis {fmt(d.kurtosis)}). **Deflated Sharpe Ratio** "
         f"{fmt(d.dsr)} (probabilistic Sharpe vs 0: {fmt(d.psr)}), against the expected maximum Sharpe "
         f"{fmt(d.expected_max_sharpe)} per day of {d.n_trials} trial(s); trials: {d.variance_source}."), "",
    ]
    if sk.pbo is not None:
        lines += [(f"**Probability of backtest overfitting** (CSCV, {sk.pbo.n_splits} blocks, "
                   f"{sk.pbo.n_combinations} combinations): {fmt(sk.pbo.pbo)} - {sk.pbo_note} "
                   "(reported, not gating)."), ""]
    else:
        lines += [f"**Probability of backtest overfitting**: not computed ({sk.pbo_note}).", ""]
    if "walk_forward" in report.plot_files:
        lines += [f"![walk-forward]({report.plot_files['walk_forward']})", ""]
    return lines


def report_markdown(report: EvaluationReport) -> str:
    """The whole report as one markdown document."""
    version = f" - version {report.model_version}" if report.model_version else ""
    verdict = "PASSED" if report.compliance.passed else "FAILED"
    lines = [
        f"# Evaluation report{version}",
        "",
        f"Task `{report.task_type}`, {report.n_rows} test rows, {len(report.features)} features. "
        f"Compliance: **{verdict}**.",
        "",
        "## Metrics vs baselines",
        "",
        frame_to_markdown(report.comparison),
    ]
    lines += [f"![{name}]({path})" for name, path in report.plot_files.items()
              if name not in ("equity_curve", "shap_summary", "walk_forward")]
    lines.append("")
    lines += _section_skill(report)
    lines += _section_backtest(report)
    lines += _section_explanation(report)
    lines += _section_fairness(report)
    lines += _section_ab(report)
    lines.append(report.compliance.to_markdown())
    return "\n".join(lines)
