"""The serving processes: the inference app (``main.py``) and the management API (``api.py``).

Plain FastAPI on top of the domain packages of ``mlops_assets``; nothing here imports Dagster.
"""
