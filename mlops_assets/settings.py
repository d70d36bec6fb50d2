"""The one configuration object of the platform.

Precedence, lowest to highest: the defaults below < a YAML file (``MLOPS_CONFIG``, default
``./config.yaml`` in the project root when present) < environment variables (the names fixed by the
user's documents: ``MLFLOW_TRACKING_URI``, ``MLFLOW_MODEL_NAME``, ``MLFLOW_MODEL_STAGE``,
``MLFLOW_EXPERIMENT_NAME``, ``DATA_LOADER_TYPE``, ``DATA_SOURCE_PATH``, ``OPENAI_API_KEY``,
``OPENAI_BASE_URL``, plus ``MLOPS_HOME`` and ``MLOPS_CONFIG``).

``MLOPS_HOME`` and every relative path resolve to absolute paths against the project root once, at
load, so a process started in ``serving/`` sees the same home. A bad value fails at load time with
a :class:`SettingsError` naming the key.
"""

from __future__ import annotations

import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent

LoaderType = Literal["synthetic", "local", "feature_store"]


class SettingsError(ValueError):
    """A configuration value is missing or invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSettings(_Section):
    loader_type: LoaderType = "synthetic"
    source_path: Path | None = None
    # synthetic generator (the demo default is small; benchmarks use 10M rows)
    n_symbols: int = Field(50, ge=1, le=100_000)
    n_days: int = Field(1000, ge=30, le=100_000)
    seed: int = 42
    # local loader: canonical name -> name in the files (matched case-insensitively)
    column_mapping: dict[str, str] = Field(default_factory=dict)
    # feature_store loader: the view or dataset table to read
    feature_store_table: str | None = None
    # DuckDB threads for warehouse writes: 0 = one per core; 1 where many runs share few cores
    warehouse_threads: int = Field(0, ge=0, le=256)


class FeatureSettings(_Section):
    horizon_days: int = Field(1, ge=1, le=60)
    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    gap_days: int | None = Field(None, ge=0, le=365)
    leakage_sample_dates: int = Field(4, ge=1, le=100)
    online_sample_rows: int = Field(500, ge=1)
    # online snapshot retention (replay of served requests works within it): the newest N versions,
    # and every version superseded less than D days ago; the current and previous are always kept
    online_retention_versions: int = Field(2, ge=2, le=100_000)
    online_retention_days: float = Field(30.0, ge=0, le=3650)


class ModelSettings(_Section):
    name: str = "market_direction"
    experiment_name: str = "market_direction"
    stage: str = "production"
    challenger_alias: str = "challenger"
    canary_alias: str = "canary"
    staging_alias: str = "staging"
    production_alias: str = "production"
    gate_metric: str = "roc_auc"
    gate_threshold: float = Field(0.5, ge=0.0, le=1.0)
    hidden_sizes: list[int] = Field(default_factory=lambda: [32, 16])
    max_epochs: int = Field(15, ge=1, le=1000)
    batch_size: int = Field(512, ge=1)
    learning_rate: float = Field(1e-3, gt=0, lt=1)
    seed: int = 42
    retrain_schedule_enabled: bool = False
    retrain_cron: str = "0 6 * * 1"
    tuning_trials: int = Field(0, ge=0, le=1000)


class EvaluationSettings(_Section):
    compliance_required: bool = True
    # checks no approval may waive: the evaluation gate, skill over the naive baselines, the drawdown limit
    critical_checks: list[str] = Field(default_factory=lambda: ["evaluation", "metric_vs_baseline", "max_drawdown"])
    cost_bps: float = Field(5.0, ge=0, le=1000)
    fairness_attribute: str = "vol_regime"
    max_drawdown_limit: float = Field(0.5, gt=0, le=1)
    metric_margin_over_baseline: float = Field(0.0, ge=-1, le=1)
    fairness_dp_limit: float = Field(0.25, ge=0, le=1)
    fairness_eo_limit: float = Field(0.25, ge=0, le=1)
    candidate_drift_limit: float = Field(0.5, ge=0, le=1)
    stress_windows: int = Field(2, ge=0, le=20)
    stress_window_days: int = Field(20, ge=2, le=500)
    scenarios: list[dict[str, str]] = Field(default_factory=list)
    shap_sample: int = Field(100, ge=10, le=5000)
    # promotion gate, skill or luck (docs/configuration.md): walk-forward folds (0 = single split),
    # purged by features.horizon_days, embargoed; the interval's lower bound must beat the best baseline
    # by metric_ci_margin_over_baseline and the Deflated Sharpe Ratio reach min_deflated_sharpe (None: off)
    walk_forward_folds: int = Field(3, ge=0, le=50)
    walk_forward_embargo_days: int = Field(5, ge=0, le=250)
    walk_forward_initial_train_fraction: float = Field(0.5, gt=0, lt=1)
    walk_forward_max_epochs: int | None = Field(None, ge=1, le=1000)  # cap on the version's own epochs
    bootstrap_samples: int = Field(500, ge=50, le=20_000)
    interval_level: float = Field(0.95, gt=0.5, lt=1)
    metric_ci_margin_over_baseline: float | None = Field(0.0, ge=-1, le=1)
    min_deflated_sharpe: float | None = Field(0.95, ge=0, le=1)
    ic_min_symbols: int = Field(5, ge=3, le=10_000)
    pbo_max_candidates: int = Field(10, ge=0, le=200)
    # canary guardrails (mlops_assets/monitoring/canary_guardrails.py; docs/operations.md "Canary"): judged every
    # canary_check_seconds over the last canary_window_seconds of the prediction log, canary rows against
    # champion rows of the same window, once each side has canary_min_requests requests
    canary_max_share: float = Field(0.5, gt=0, le=1)  # the largest --share a canary may take
    canary_max_error_rate: float = Field(0.01, ge=0, le=1)  # canary requests whose model raised
    canary_max_p99_ratio: float = Field(2.0, ge=1)  # canary p99 latency over the champion's ...
    canary_p99_slack_ms: float = Field(25.0, ge=0)  # ... and over the champion's + this (both must fail)
    canary_max_ks: float = Field(0.3, gt=0, le=1)  # two-sample KS statistic of the predicted probabilities
    canary_ks_alpha: float = Field(0.01, gt=0, lt=1)  # ... and its p-value below this (both must fail)
    canary_min_requests: int = Field(50, ge=5, le=1_000_000)
    canary_window_seconds: float = Field(60.0, gt=0, le=86_400)
    canary_hold_seconds: float = Field(600.0, ge=0, le=30 * 86_400)  # held this long: ready to promote
    canary_check_seconds: float = Field(5.0, gt=0, le=30)


class MonitoringSettings(_Section):
    drift_share_threshold: float = Field(0.5, gt=0, le=1)  # dataset drift: this share of features drift
    drift_window_days: int = Field(60, ge=5, le=5000)
    # "calibrated": per-feature p-value against a block-bootstrap null of the reference's own history,
    # Benjamini-Hochberg at drift_fdr_alpha; "evidently": Evidently's fixed thresholds, exactly
    drift_method: Literal["calibrated", "evidently"] = "calibrated"
    drift_fdr_alpha: float = Field(0.05, gt=0, lt=1)
    drift_null_draws: int = Field(1000, ge=100, le=100_000)
    drift_block_days: int | None = Field(None, ge=1, le=5000)  # None: the window length (drift_window_days)
    cooldown_hours: float = Field(24.0, ge=0)
    webhook_url: str | None = None
    # live performance (monitoring/performance.py): the one-sided test of a version's live metric against
    # its recorded evaluation, at this level, with this power to detect this fall, over a trailing window
    performance_alpha: float = Field(0.01, gt=0, lt=0.5)
    performance_power: float = Field(0.8, gt=0.5, lt=1)
    performance_min_degradation: float = Field(0.05, gt=0, lt=0.5)
    performance_window_days: int = Field(20, ge=1, le=3650)
    # calendar days between serving and measuring a day (None: enough for features.horizon_days + weekends)
    performance_label_lag_days: int | None = Field(None, ge=1, le=3650)


class ServingSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    api_port: int = Field(8081, ge=1, le=65535)
    poll_seconds: float = Field(5.0, gt=0, le=3600)
    # a worker accepts connections once its first registry poll has finished (loaded, or found what is
    # missing), for at most this long: with several workers, a starting one never answers 503 while
    # its siblings serve (serving/inference/runtime.py)
    startup_wait_seconds: float = Field(30.0, ge=0, le=3600)
    max_batch: int = Field(1000, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    challenger_traffic_percent: float = Field(0.0, ge=0, le=100)
    # shadow scoring: the prediction-log writer process scores every served vector with this alias of
    # model.name too, off the request path (serving/inference/predlog_shadow.py); "" turns it off
    shadow_alias: str = Field("challenger", max_length=200)
    # served segments closed without shadow rows (the writer had no CPU, or no shadow model yet) are
    # scored later on idle CPU when younger than this; 0 turns the catch-up off
    shadow_catch_up_hours: float = Field(24.0, ge=0, le=24 * 365)
    api_keys: dict[str, dict[str, str]] = Field(default_factory=dict)  # key -> {owner, role}
    # prediction log: a Parquet segment is closed every log_flush_rows rows or log_flush_seconds
    log_flush_rows: int = Field(5000, ge=1)
    log_flush_seconds: float = Field(2.0, gt=0, le=3600)
    # deprecated, no effect: the segments are always written by a writer process per worker at idle CPU
    # priority (serving/inference/predlog.py); "process" is accepted with a warning, "thread" is refused
    log_writer: str | None = None
    access_log: bool = True  # one JSON line per request on stderr (written off the request path)
    # a successful /predict is in the prediction log already (request id, time, latency, model
    # version); its access-log line is off by default: formatting ~4,000 lines/s in the worker's
    # background thread costs the tail latency more than the line is worth
    access_log_predictions: bool = False
    inference_url: str | None = None  # where the management API reads /ready and /metrics (default host:port)
    dagster_graphql_url: str = "http://127.0.0.1:3000/graphql"

    @field_validator("log_writer")
    @classmethod
    def _one_log_writer(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if v in ("process", "thread"):  # one release of grace: 'thread' now runs the writer process too
            warnings.warn(f"serving.log_writer is deprecated and has no effect ({v!r} included: the thread mode "
                          "was removed): every inference worker writes its prediction log through a writer "
                          "process; remove the key, which goes in the next release", FutureWarning, stacklevel=2)
            return v
        raise ValueError(f"{v!r} is not a prediction-log writer: every inference worker writes through its "
                         "writer process; remove serving.log_writer from the configuration")


class LLMSettings(_Section):
    api_key: SecretStr | None = None
    base_url: str | None = None
    model: str = "gpt-4o-mini"
    llm_model_name: str = "market_narrative_llm"


class RecoverySettings(_Section):
    # a STARTED run on shared (Postgres) storage counts as dead after this long without an event; 0 never
    # (on the local SQLite instance a run is judged by whether its processes still run: defs/recovery.py)
    stale_run_seconds: float = Field(0.0, ge=0)


class Settings(_Section):
    home: Path = Path(".mlops")
    tracking_uri: str | None = None
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    governance_url: str | None = None
    prompts_dir: Path = Path("prompts")  # the prompt library (one YAML file per template)
    data: DataSettings = Field(default_factory=DataSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)

    @field_validator("home", "prompts_dir")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        return _resolve(v)

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        if self.data.source_path is not None:
            path = _resolve(self.data.source_path)
            if not path.exists():
                raise ValueError(f"data.source_path: {path} does not exist")
            self.data.source_path = path
        if self.data.loader_type == "local" and self.data.source_path is None:
            raise ValueError("data.source_path: required when data.loader_type is 'local' (set DATA_SOURCE_PATH)")
        return self

    # derived locations: everything lives under home
    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def online_dir(self) -> Path:
        return self.home / "online"

    @property
    def readmodels_dir(self) -> Path:
        return self.home / "readmodels"

    @property
    def serving_log_dir(self) -> Path:
        return self.home / "serving"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def drift_profiles_dir(self) -> Path:
        return self.home / "drift_profiles"

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def governance_db_url(self) -> str:
        return self.governance_url or f"sqlite:///{self.home / 'governance.db'}"

    @property
    def serving_alias(self) -> str:
        """``MLFLOW_MODEL_STAGE`` (``Staging``/``Production`` or an alias) mapped onto an alias name."""
        stage = self.model.stage.strip()
        aliases = {"staging": self.model.staging_alias, "production": self.model.production_alias,
                   "challenger": self.model.challenger_alias}
        return aliases.get(stage.lower(), stage)

    def ensure_dirs(self) -> None:
        for d in (self.home, self.dagster_home, self.online_dir, self.readmodels_dir,
                  self.serving_log_dir, self.reports_dir, self.artifacts_dir, self.secrets_dir):
            d.mkdir(parents=True, exist_ok=True)


def _resolve(p: Path | str) -> Path:
    p = Path(p).expanduser()
    return p if p.is_absolute() else (PROJECT_ROOT / p).resolve()


# environment variable -> dotted settings key
ENV_VARS: dict[str, str] = {
    "MLOPS_HOME": "home",
    "MLFLOW_TRACKING_URI": "tracking_uri",
    "MLOPS_GOVERNANCE_URL": "governance_url",
    "MLFLOW_MODEL_NAME": "model.name",
    "MLFLOW_MODEL_STAGE": "model.stage",
    "MLFLOW_EXPERIMENT_NAME": "model.experiment_name",
    "DATA_LOADER_TYPE": "data.loader_type",
    "DATA_SOURCE_PATH": "data.source_path",
    "OPENAI_API_KEY": "llm.api_key",
    "OPENAI_BASE_URL": "llm.base_url",
    "DAGSTER_GRAPHQL_URL": "serving.dagster_graphql_url",
}


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SettingsError(f"{dotted}: the config file gives '{part}' a value, not a section")
    node[leaf] = value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"MLOPS_CONFIG: {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"MLOPS_CONFIG: {path} must hold a mapping at the top level")
    return data


def load_settings(env: dict[str, str] | None = None, config_path: Path | str | None = None) -> Settings:
    """Build Settings from defaults, the YAML file and the environment (in that order)."""
    env = dict(os.environ if env is None else env)
    tree: dict[str, Any] = {}
    if config_path is None and env.get("MLOPS_CONFIG"):
        config_path = env["MLOPS_CONFIG"]
        if not _resolve(config_path).exists():
            raise SettingsError(f"MLOPS_CONFIG: {_resolve(config_path)} does not exist")
    path = _resolve(config_path) if config_path else PROJECT_ROOT / "config.yaml"
    if path.exists():
        tree = _read_yaml(path)
    for var, key in ENV_VARS.items():
        if env.get(var):
            _set_dotted(tree, key, env[var])
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            env_name = next((v for v, k in ENV_VARS.items() if k == loc), None)
            where = f"{loc} (env {env_name})" if env_name else loc
            problems.append(f"{where}: {err['msg']}" if loc else err["msg"])
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide Settings, loaded once. Tests call ``get_settings.cache_clear()``."""
    return load_settings()


def use_mlflow_tracking_uri(uri: str | None) -> None:
    """``mlflow.set_tracking_uri(uri)`` for this process's fluent MLflow calls, without leaving
    ``MLFLOW_TRACKING_URI`` behind in the environment.

    MLflow exports the URI it is given as ``MLFLOW_TRACKING_URI``, the variable these settings read
    as the user's own choice. Left there, a later ``load_settings`` in the same process (another
    ``MLOPS_HOME``: a test, the demo, a code server) would inherit one home's registry as an explicit
    setting. The variable is put back as it was.
    """
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous
