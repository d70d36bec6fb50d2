"""Launch Dagster runs over Dagster's GraphQL API with plain HTTP (no dagster import in serving).

``launch_partition_run`` adds the partition to a dynamic partitions definition (a duplicate is
fine) and launches the job for it, tagged with who asked. Errors: :class:`DagsterUnavailable`
when the webserver cannot be reached (the message names the URL), :class:`DagsterRefused` when
Dagster answered with an error (the message is Dagster's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

ADD_PARTITION = """
mutation AddPartition($repositorySelector: RepositorySelector!, $partitionsDefName: String!,
                     $partitionKey: String!) {
  addDynamicPartition(repositorySelector: $repositorySelector, partitionsDefName: $partitionsDefName,
                      partitionKey: $partitionKey) {
    __typename
    ... on AddDynamicPartitionSuccess { partitionKey }
    ... on DuplicateDynamicPartitionError { partitionName }
    ... on Error { message }
  }
}
"""

LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}
"""


class DagsterUnavailable(RuntimeError):
    """The Dagster webserver did not answer."""


class DagsterRefused(RuntimeError):
    """Dagster answered with an error."""


@dataclass(frozen=True)
class DagsterTarget:
    url: str
    location: str = "mlops_assets"
    repository: str = "__repository__"


def _post(target: DagsterTarget, query: str, variables: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    try:
        response = httpx.post(target.url, json={"query": query, "variables": variables}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise DagsterUnavailable(f"Dagster's GraphQL API at {target.url} did not answer "
                                 f"({type(exc).__name__}); start it with `dagster dev` or set "
                                 "DAGSTER_GRAPHQL_URL") from None
    if response.status_code != 200:
        raise DagsterRefused(f"Dagster at {target.url} answered HTTP {response.status_code}: "
                             f"{response.text[:300]}")
    body = response.json()
    if body.get("errors"):
        raise DagsterRefused("; ".join(str(e.get("message")) for e in body["errors"]))
    return body.get("data") or {}


def launch_partition_run(target: DagsterTarget, job: str, partitions_def: str, partition_key: str,
                         tags: dict[str, str], timeout_s: float = 10.0) -> dict[str, Any]:
    """Add ``partition_key`` to ``partitions_def`` and launch ``job`` for it; returns ``{run_id, status}``."""
    selector = {"repositoryLocationName": target.location, "repositoryName": target.repository}
    added = _post(target, ADD_PARTITION, {"repositorySelector": selector, "partitionsDefName": partitions_def,
                                          "partitionKey": partition_key}, timeout_s)["addDynamicPartition"]
    if added["__typename"] not in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"):
        message = added.get("message", added["__typename"])
        raise DagsterRefused(f"adding partition {partition_key!r}: {message}")
    run_tags = [{"key": "dagster/partition", "value": partition_key},
                *({"key": k, "value": v} for k, v in tags.items())]
    params = {"selector": {**selector, "jobName": job}, "executionMetadata": {"tags": run_tags}}
    launched = _post(target, LAUNCH_RUN, {"executionParams": params}, timeout_s)["launchRun"]
    if launched["__typename"] != "LaunchRunSuccess":
        errors = launched.get("errors") or []
        message = launched.get("message") or "; ".join(e["message"] for e in errors) or launched["__typename"]
        raise DagsterRefused(f"launching {job} for {partition_key!r}: {message}")
    return {"run_id": launched["run"]["runId"], "status": launched["run"]["status"]}
