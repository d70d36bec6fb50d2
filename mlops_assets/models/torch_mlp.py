"""The plain-torch core of the tabular model: network, model spec and the fast predictor.

Deliberately free of Lightning, pandas, MLflow and of any other module of this package (imported as
part of the package, it takes ``ModelSpecError``'s base from the stdlib-only ``mlops_assets.errors``;
the shipped copy uses a stand-in), because three places import it and two of them must start fast:

* ``lit_module.py`` trains the network defined here (``build_mlp``) inside a LightningModule;
* ``pyfunc_model.py`` (the MLflow models-from-code file) serves it. This file is also shipped
  inside every logged model (``code_paths``), so ``mlflow.pyfunc.load_model`` and
  ``mlflow models serve`` work in an environment that has only ``mlflow``, ``torch``, ``numpy``
  and ``pandas``, without this package installed;
* serving's hot path (``TorchPredictor.predict_array``) runs here, without importing Lightning
  (which alone takes seconds to import).

Latency advice for serving at thousands of requests per second: call
``torch.set_num_threads(1)`` once per worker process (intra-op threads only add overhead for a
single row) and scale with processes; keep inputs as ``float32`` numpy arrays in ``features``
order and call ``predict_array``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

if __package__:  # imported as mlops_assets.models.torch_mlp: the platform's error vocabulary (stdlib only)
    from mlops_assets.errors import InvalidInput as _InvalidInput
else:  # the copy shipped inside a logged model (``code_paths``, imported as ``torch_mlp``) imports no package

    class _InvalidInput(ValueError):  # type: ignore[no-redef]
        """Stand-in for ``mlops_assets.errors.InvalidInput``: the same ``field``, ``reasons`` and message."""

        http_status, exit_code = 422, 2

        def __init__(self, field: str, reasons: str) -> None:
            self.field, self.reasons, self.hint = field, [reasons], ""
            super().__init__(f"{field}: {reasons}")


SPEC_FORMAT_VERSION = 1
SPEC_FILE = "model_spec.json"
WEIGHTS_FILE = "state_dict.pt"
TASK_TYPES = ("binary", "multiclass", "regression")


class ModelSpecError(_InvalidInput):
    """A model spec or an input to the predictor is invalid (an ``InvalidInput``: HTTP 422, CLI exit 2);
    ``field`` names the culprit, ``reasons`` the problem; ``str()`` is ``"<field>: <message>"``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)


@dataclass(frozen=True)
class ModelSpec:
    """Everything besides the weights that is needed to rebuild and feed the network.

    ``mean``/``std`` are the standardisation statistics of the training split, in ``features``
    order. ``classes`` are the label values behind the output units (binary: ``(0, 1)``,
    multiclass: the sorted distinct labels, regression: empty). A regression network predicts
    the standardised target; ``target_mean``/``target_std`` undo that.
    """

    features: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hidden_sizes: tuple[int, ...]
    dropout: float
    task_type: str
    classes: tuple[int, ...] = (0, 1)
    target: str = "label"
    target_mean: float = 0.0
    target_std: float = 1.0
    format_version: int = SPEC_FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.task_type not in TASK_TYPES:
            raise ModelSpecError("task_type", f"{self.task_type!r} is not one of {TASK_TYPES}")
        if not self.features:
            raise ModelSpecError("features", "at least one feature is needed")
        if len(set(self.features)) != len(self.features):
            raise ModelSpecError("features", "feature names must be unique")
        if len(self.mean) != len(self.features) or len(self.std) != len(self.features):
            raise ModelSpecError("mean/std", "need one value per feature")
        if self.task_type == "multiclass" and len(self.classes) < 2:
            raise ModelSpecError("classes", "multiclass needs at least two classes")

    @property
    def n_outputs(self) -> int:
        """Output units: one logit (binary), one per class (multiclass), one value (regression)."""
        return len(self.classes) if self.task_type == "multiclass" else 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "ModelSpec":
        version = int(raw.get("format_version", 0))
        if version != SPEC_FORMAT_VERSION:
            raise ModelSpecError(
                "format_version",
                f"model spec format {version} is not supported (expected {SPEC_FORMAT_VERSION}); "
                "re-log the model with this version of the code",
            )
        return cls(
            features=tuple(raw["features"]),
            mean=tuple(float(v) for v in raw["mean"]),
            std=tuple(float(v) for v in raw["std"]),
            hidden_sizes=tuple(int(v) for v in raw["hidden_sizes"]),
            dropout=float(raw["dropout"]),
            task_type=str(raw["task_type"]),
            classes=tuple(int(v) for v in raw.get("classes", ())),
            target=str(raw.get("target", "label")),
            target_mean=float(raw.get("target_mean", 0.0)),
            target_std=float(raw.get("target_std", 1.0)),
            format_version=version,
        )


def standardisation_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Column means and standard deviations ignoring NaN; a constant or empty column gets std 1."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: handled below
        mean = np.nanmean(x, axis=0) if len(x) else np.zeros(x.shape[1])
        std = np.nanstd(x, axis=0) if len(x) else np.ones(x.shape[1])
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def standardise(x: np.ndarray, mean: np.ndarray, inv_std: np.ndarray) -> np.ndarray:
    """``(x - mean) * inv_std`` as float32, NaN (missing) imputed with the mean, i.e. 0."""
    z = (x.astype(np.float32, copy=False) - mean) * inv_std
    if np.isnan(z).any():
        z = np.nan_to_num(z, nan=0.0)
    return z


def raw_to_output(raw: torch.Tensor, task_type: str, target_mean: float = 0.0,
                  target_std: float = 1.0) -> torch.Tensor:
    """Network output -> P(class 1) ``(n,)``, class probabilities ``(n, k)`` or value ``(n,)``."""
    if task_type == "binary":
        return torch.sigmoid(raw[:, 0])
    if task_type == "multiclass":
        return torch.softmax(raw, dim=1)
    return raw[:, 0] * target_std + target_mean


def build_mlp(n_inputs: int, hidden_sizes: Sequence[int], dropout: float, n_outputs: int) -> nn.Sequential:
    """A ReLU multilayer perceptron producing raw outputs (logits or a regression value)."""
    layers: list[nn.Module] = []
    width = n_inputs
    for size in hidden_sizes:
        layers += [nn.Linear(width, int(size)), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = int(size)
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


def save_artifacts(directory: str | Path, spec: ModelSpec,
                   state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Write the spec JSON and the state dict; return ``{"spec": path, "weights": path}``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / SPEC_FILE).write_text(spec.to_json())
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, out / WEIGHTS_FILE)
    return {"spec": str(out / SPEC_FILE), "weights": str(out / WEIGHTS_FILE)}


def load_spec(path: str | Path) -> ModelSpec:
    return ModelSpec.from_dict(json.loads(Path(path).read_text()))


class TorchPredictor:
    """Inference-only network plus its preprocessing; thread-safe for concurrent predictions.

    ``predict_array`` returns the model output per row: the probability of class 1 (binary,
    shape ``(n,)``), class probabilities (multiclass, ``(n, k)``) or the value (regression,
    ``(n,)``). Missing values (NaN) are imputed with the training mean.
    """

    def __init__(self, spec: ModelSpec, state_dict: Mapping[str, torch.Tensor]) -> None:
        self.spec = spec
        self.features: tuple[str, ...] = spec.features
        self._index = {name: i for i, name in enumerate(spec.features)}
        self._mean = np.asarray(spec.mean, dtype=np.float32)
        self._inv_std = (1.0 / np.asarray(spec.std, dtype=np.float64)).astype(np.float32)
        self._classes = np.asarray(spec.classes, dtype=np.int64)
        net = build_mlp(len(spec.features), spec.hidden_sizes, spec.dropout, spec.n_outputs)
        net.load_state_dict(dict(state_dict))
        net.eval()
        for param in net.parameters():
            param.requires_grad_(False)
        self.net = net
        # the hot path skips nn.Module dispatch: (W^T, b) per Linear, ReLU between (see build_mlp;
        # dropout is the identity at inference). Measured 2x faster than net(x) for one row.
        self._layers = [(m.weight.detach().t().contiguous(), m.bias.detach())
                        for m in net if isinstance(m, nn.Linear)]

    @classmethod
    def from_files(cls, spec_path: str | Path, weights_path: str | Path) -> "TorchPredictor":
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        return cls(load_spec(spec_path), state)

    @classmethod
    def from_directory(cls, directory: str | Path) -> "TorchPredictor":
        d = Path(directory)
        return cls.from_files(d / SPEC_FILE, d / WEIGHTS_FILE)

    def standardise(self, x: np.ndarray) -> np.ndarray:
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ModelSpecError(
                "input", f"expected shape (n, {len(self.features)}) in feature order {list(self.features)}, "
                f"got {x.shape}",
            )
        return standardise(x, self._mean, self._inv_std)

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        """The fast path: a 2-D (or one 1-D row) array in ``features`` order -> model output."""
        z = self.standardise(np.asarray(x))
        spec = self.spec
        with torch.inference_mode():
            h = torch.from_numpy(z)
            last = len(self._layers) - 1
            for i, (w_t, b) in enumerate(self._layers):
                h = torch.addmm(b, h, w_t)
                if i < last:
                    h = torch.relu(h)
            return raw_to_output(h, spec.task_type, spec.target_mean, spec.target_std).numpy()

    def records_to_array(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Rows as dicts (feature -> value) -> array in feature order; a missing key is NaN."""
        x = np.full((len(records), len(self.features)), np.nan, dtype=np.float32)
        for i, row in enumerate(records):
            for j, name in enumerate(self.features):
                value = row.get(name)
                if value is not None:
                    x[i, j] = value
        return x

    def classes_from_output(self, output: np.ndarray) -> np.ndarray:
        """Class predictions (binary threshold 0.5, multiclass argmax) or the regression values."""
        if self.spec.task_type == "binary":
            return (output >= 0.5).astype(np.int64)
        if self.spec.task_type == "multiclass":
            return self._classes[np.argmax(output, axis=1)]
        return output

    def output_columns(self, output: np.ndarray) -> dict[str, np.ndarray]:
        """Named output columns, as the pyfunc returns them (``prediction`` plus probabilities)."""
        columns: dict[str, np.ndarray] = {"prediction": self.classes_from_output(output)}
        if self.spec.task_type == "binary":
            columns["probability"] = output.astype(np.float64)
        elif self.spec.task_type == "multiclass":
            for k, cls in enumerate(self.spec.classes):
                columns[f"probability_{cls}"] = output[:, k].astype(np.float64)
        else:
            columns["prediction"] = output.astype(np.float64)
        return columns
