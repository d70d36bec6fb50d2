"""What the skill-or-luck promotion gate costs and decides, on the demo's synthetic market and on real prices.

For each data set: build the feature views and the training dataset as the assets do, train and
register one version (the platform's Lightning wrapper, settings' hyper-parameters) in a temporary
MLOPS_HOME, then run ``evaluate_model_version`` (the body of the ``model_evaluation`` asset) and
print the time of one training, the time the walk-forward assessment adds, the whole evaluation,
and the gate's checks with value and threshold.

    .venv/bin/python benchmarks/promotion_gate.py [--data synthetic|real|both] [--folds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def _market(kind: str, work: Path):
    if kind == "synthetic":
        from mlops_assets.data.synthetic import generate_market_data

        return generate_market_data(50, 1000, seed=42, include_regime=False)
    from mlops_assets.data.loaders import LocalDataLoader
    from mlops_assets.data.real import write_yahoo_folder

    write_yahoo_folder(work / "real")
    return LocalDataLoader(work / "real").load()


def run(kind: str, folds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["MLOPS_HOME"] = str(work / "home")
        config = work / "config.yaml"
        config.write_text(f"evaluation:\n  walk_forward_folds: {folds}\n  shap_sample: 50\n")
        os.environ["MLOPS_CONFIG"] = str(config)
        from mlops_assets import stores
        from mlops_assets.evaluation.version import evaluate_model_version
        from mlops_assets.features.compute import compute_views
        from mlops_assets.features.datasets import build_training_dataset
        from mlops_assets.features.views import FEATURE_VIEWS
        from mlops_assets.models.lightning import TrainConfig
        from mlops_assets.models.registration import Lineage, train_and_register
        from mlops_assets.settings import get_settings

        get_settings.cache_clear()
        s = get_settings()
        s.ensure_dirs()
        market = _market(kind, work)
        views = compute_views(FEATURE_VIEWS, market)
        ds = build_training_dataset([v.df for v in views.values()], market, s.features.horizon_days,
                                    val_frac=s.features.validation_fraction, test_frac=s.features.test_fraction)
        data = ds.df
        config = TrainConfig(hidden_sizes=tuple(s.model.hidden_sizes), max_epochs=s.model.max_epochs,
                             lr=s.model.learning_rate, batch_size=s.model.batch_size, seed=s.model.seed)
        started = time.perf_counter()
        registered = train_and_register(data, ds.features, config, tracking_uri=s.mlflow_tracking_uri,
                                        experiment_name=s.model.experiment_name, model_name=s.model.name,
                                        lineage=Lineage(registered_by="benchmark"),
                                        artifact_location=str(s.artifacts_dir))
        train_s = time.perf_counter() - started
        client = stores.mlflow_client(s)
        result = evaluate_model_version(client, stores.governance_store(s), s, data, registered.version,
                                        dagster_run_id="benchmark")
        sk = result.skill
        print(f"\n== {kind}: {data['symbol'].n_unique()} symbols x {data['date'].n_unique()} dates, "
              f"{data.height} rows, {len(ds.features)} features, {folds} folds ==")
        print(f"one training (train_and_register): {train_s:6.1f} s")
        print(f"skill assessment (walk-forward + statistics): {result.seconds['skill_assessment']:6.1f} s")
        print(f"whole evaluation (evaluate_model_version): {result.seconds['total']:6.1f} s")
        print(f"mode: {sk.mode}; {sk.note}")
        iv = sk.interval
        print(f"{iv.metric}: {iv.value:.4f} [{iv.low:.4f}, {iv.high:.4f}] baselines {sk.baselines}")
        print(f"IC ({sk.ic.method}): mean {sk.ic.mean:.4f} t {sk.ic.t_stat:.2f} ICIR {sk.ic.icir:.3f} n {sk.ic.n}")
        d = sk.dsr
        print(f"Sharpe {d.sharpe_annualised:.3f} (annualised), DSR {d.dsr:.4f}, PSR {d.psr:.4f}, trials {d.n_trials}")
        print(sk.per_fold)
        for c in result.report.compliance.checks:
            if c.name in ("metric_vs_baseline", "metric_ci_vs_baseline", "deflated_sharpe"):
                print(f"  {c.name:24s} {'pass' if c.passed else 'FAIL'}  value {c.value}  threshold {c.threshold}")
        print(f"verdict: {'PASSED' if result.report.passed else 'FAILED'} "
              f"(failed: {[c.name for c in result.report.compliance.failed_checks]})")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["synthetic", "real", "both"], default="both")
    parser.add_argument("--folds", type=int, default=3)
    args = parser.parse_args(argv)
    for kind in (["synthetic", "real"] if args.data == "both" else [args.data]):
        run(kind, args.folds)


if __name__ == "__main__":
    main(sys.argv[1:])
