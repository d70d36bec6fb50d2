"""A pyfunc model "trained elsewhere" (models-from-code): logistic regression from a JSON artifact.

Stands in for another team's model in the import test; it follows none of our conventions
(output is a bare ``(n, 2)`` array of class probabilities, like scikit-learn's predict_proba).
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class ExternalLogit(PythonModel):
    def load_context(self, context: Any) -> None:
        with open(context.artifacts["coefficients"]) as fh:
            raw = json.load(fh)
        self.features = raw["features"]
        self.coef = np.asarray(raw["coef"], dtype=float)
        self.intercept = float(raw["intercept"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        logit = model_input[self.features].to_numpy(dtype=float) @ self.coef + self.intercept
        p = 1.0 / (1.0 + np.exp(-logit))
        return np.column_stack([1.0 - p, p])


mlflow.models.set_model(ExternalLogit())
