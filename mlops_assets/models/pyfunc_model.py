"""MLflow models-from-code file for the tabular MLP (logged by ``PytorchLightningWrapper``).

MLflow copies this file into every logged model and executes it when the model is loaded
(``mlflow.pyfunc.load_model``, ``mlflow models serve``); ``set_model`` at the bottom hands MLflow
the ``PythonModel``. The model's artifacts are ``spec`` (JSON: ordered features, standardisation
statistics, architecture, task type) and ``weights`` (a torch state dict). ``torch_mlp.py`` is
shipped next to it as a code path, so loading needs only mlflow, torch, numpy and pandas.

Input: a pandas DataFrame with one column per feature (extra columns are ignored). Output: a
DataFrame with ``prediction`` plus ``probability`` (binary) or ``probability_<class>``
(multiclass).
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

try:  # the copy shipped inside the logged model (``code_paths``): the code it was logged with
    from torch_mlp import ModelSpecError, TorchPredictor
except ImportError:  # importing this file from the installed package
    from mlops_assets.models.torch_mlp import ModelSpecError, TorchPredictor


class TradingMLPModel(PythonModel):
    """Pyfunc over ``TorchPredictor``; ``predictor`` is set by ``load_context``."""

    predictor: TorchPredictor | None = None

    def load_context(self, context) -> None:
        self.predictor = TorchPredictor.from_files(context.artifacts["spec"], context.artifacts["weights"])

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self.predictor is None:
            raise RuntimeError("the model was not loaded: load it with mlflow.pyfunc.load_model")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        missing = [name for name in self.predictor.features if name not in frame.columns]
        if missing:
            raise ModelSpecError("model_input", f"missing feature columns {missing}")
        x = frame[list(self.predictor.features)].to_numpy(dtype="float32", na_value=float("nan"))
        output = self.predictor.predict_array(x)
        return pd.DataFrame(self.predictor.output_columns(output), index=frame.index)


mlflow.models.set_model(TradingMLPModel())
