"""The seed's name for the inference app: ``uvicorn main:app`` inside ``serving/`` (the installed
project makes ``serving`` importable from there). It only re-exports :mod:`serving.inference.main`;
start ``uvicorn serving.inference.main:app`` from the project root instead (the Docker image and
``mlops serve`` do)."""

from serving.inference.main import app, create_app

__all__ = ["app", "create_app"]
