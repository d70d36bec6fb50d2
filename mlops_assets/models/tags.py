"""Names of the MLflow tags and aliases the platform reads and writes.

One place, so the registry code, the promotion gate, the evaluation harness, serving and the
management API agree on spelling. Tags on a registered model *version* mirror the governance
store (the single source of truth for decisions and gate results); they exist for the MLflow UI and
are never trusted: the alias mover refuses when a mirror disagrees with the record (``gates.py``).
"""

from __future__ import annotations

# aliases (names configurable through Settings; these are the defaults)
ALIAS_CHALLENGER = "challenger"
ALIAS_STAGING = "staging"
ALIAS_PRODUCTION = "production"
ALIAS_CANARY = "canary"

# lineage tags on the training run and the model version
TAG_FEATURE_VIEWS = "lineage.feature_views"          # JSON: {"view_name": "1.2.0", ...}
TAG_FEATURES = "lineage.features"                    # JSON list of ordered feature names
TAG_DATASET_FINGERPRINT = "lineage.dataset_fingerprint"
TAG_DAGSTER_RUN_ID = "lineage.dagster_run_id"
TAG_REGISTERED_BY = "registered_by"
TAG_TASK_TYPE = "task_type"                          # binary | multiclass | regression
TAG_SOURCE = "source"                                # "trained" | "imported"

# evaluation / gate tags on the model version (mirrors of decisions; "true" / "false")
TAG_EVALUATION_PASSED = "evaluation.passed"
TAG_EVALUATION_METRIC = "evaluation.metric"
TAG_EVALUATION_VALUE = "evaluation.value"
TAG_COMPLIANCE_PASSED = "compliance.passed"
TAG_REJECTED = "rejected"
TAG_REJECTED_REASON = "rejected.reason"
TAG_APPROVAL_STATE = "approval.state"                # IN_REVIEW | APPROVED | REJECTED
TAG_APPROVED_BY = "approval.by"
TAG_APPROVAL_WAIVERS = "approval.waivers"            # checks the approval waived (mirror of the store)
TAG_ARCHIVED = "archived"
TAG_CANARY_SHARE = "canary.share"                   # share of traffic while it holds the canary alias

# added by the model layer (registry.py / wrapper.py)
TAG_WRAPPER = "wrapper"                              # ModelWrapper that serves it: lightning | llm | pyfunc
TAG_EVALUATION_THRESHOLD = "evaluation.threshold"    # what the gate compared evaluation.value with
TAG_IMPORTED_FROM = "lineage.imported_from"          # source URI of a version made by import_external_model
