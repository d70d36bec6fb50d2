"""The inference app (``uvicorn serving.inference.main:app``): ``/predict``, ``/invoke``, health,
readiness, metrics; the runtime that loads and swaps models, the request fast path, and the
prediction log with its writer process."""
