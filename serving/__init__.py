"""The serving processes: the inference app (``serving.inference``) and the management API
(``serving.management``), with what both use beside them here: API keys (``auth``), the error
mapping (``errors``), metrics, access log and request ids (``metrics``, ``observability``) and the
OpenAPI error body (``schemas``).

Plain FastAPI on top of the domain packages of ``mlops_assets``; nothing here imports Dagster.
"""
