"""The management API (``uvicorn serving.management.main:app``): the team's ``/api/v1`` routes
(features, lifecycle and approvals, evaluation, audit, prompt governance) and the Dagster client."""
