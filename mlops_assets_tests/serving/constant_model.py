"""A deliberately broken model for canary tests and benchmarks: the same answer, P(up) = 0.99, for every
row. Logged as an MLflow models-from-code pyfunc (``python_model=str(CONSTANT_MODEL_PATH)``); never imported
by the suite itself (importing it registers the model with ``mlflow.models.set_model``)."""

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class Constant(PythonModel):
    def predict(self, context, model_input, params=None):
        n = len(model_input)
        return np.column_stack([np.full(n, 0.01), np.full(n, 0.99)])


mlflow.models.set_model(Constant())
