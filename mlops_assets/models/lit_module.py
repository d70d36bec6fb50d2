"""The LightningModule and the Trainer runs behind ``PytorchLightningWrapper``.

Kept apart from ``lightning.py`` so that only training imports ``pytorch_lightning`` (seconds of
import time and ~100 MB per process): a serving process that loads a model through
``load_wrapper`` never imports this module.

``fit`` trains on CPU with a ``MLFlowLogger`` bound to an explicit tracking URI and run id,
``EarlyStopping`` and ``ModelCheckpoint`` on ``val_loss``; ``test`` runs ``trainer.test()``.
Both run seeded and deterministic with a fixed number of torch threads.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import MLFlowLogger
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from mlops_assets.models.torch_mlp import build_mlp, raw_to_output
from mlops_assets.models.wrapper import classification_or_regression_metrics

EVAL_BATCH = 8192


class LitMLP(pl.LightningModule):
    """LightningModule around ``torch_mlp.build_mlp``; ``self.net`` alone is what gets served."""

    def __init__(self, n_inputs: int, hidden_sizes: tuple[int, ...], dropout: float, n_outputs: int,
                 task_type: str, lr: float = 1e-3, weight_decay: float = 0.0,
                 target_mean: float = 0.0, target_std: float = 1.0) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # params are logged once, explicitly, by the wrapper
        self.net = build_mlp(n_inputs, hidden_sizes, dropout, n_outputs)
        self.task_type = task_type
        self._outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.task_type == "binary":
            return nn.functional.binary_cross_entropy_with_logits(raw[:, 0], y)
        if self.task_type == "multiclass":
            return nn.functional.cross_entropy(raw, y)
        scaled = (y - self.hparams.target_mean) / self.hparams.target_std
        return nn.functional.mse_loss(raw[:, 0], scaled)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self._loss(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], prefix: str) -> None:
        x, y = batch
        raw = self(x)
        self.log(f"{prefix}_loss", self._loss(raw, y), on_step=False, on_epoch=True, batch_size=len(x))
        hp = self.hparams
        self._outputs.append((raw_to_output(raw, self.task_type, hp.target_mean, hp.target_std), y))

    def _eval_epoch_end(self, prefix: str) -> None:
        if not self._outputs:
            return
        output = torch.cat([o for o, _ in self._outputs]).cpu().numpy()
        y = torch.cat([t for _, t in self._outputs]).cpu().numpy()
        self._outputs.clear()
        metrics = classification_or_regression_metrics(self.task_type, y, output, prefix=f"{prefix}_")
        self.log_dict({k: v for k, v in metrics.items() if np.isfinite(v)}, on_epoch=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)


class LossCurve(Callback):
    """Collects ``{"epoch", "train_loss", "val_loss", "val_*"}`` once per epoch (after validation)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        row = {"epoch": float(trainer.current_epoch)}
        for key, value in trainer.callback_metrics.items():
            if key.startswith(("train_", "val_")):
                row[key] = float(value)
        self.rows.append(row)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's info logs and its worker/logging-interval warnings."""
    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning vs newer torch pytree API
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads. A small MLP gains nothing from more, and on a busy host
    extra threads spin against other processes (measured: 1 thread 3 ms/step, 2 threads 50 ms)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def make_loader(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """Whole batches sliced from two tensors (no per-row collate), seeded shuffling, no workers."""
    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    base = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)) if shuffle \
        else SequentialSampler(dataset)
    return DataLoader(dataset, sampler=BatchSampler(base, batch_size=batch_size, drop_last=False),
                      batch_size=None, num_workers=0)


def make_logger(tracking_uri: str, run_id: str, log_checkpoints: bool) -> MLFlowLogger:
    """An ``MLFlowLogger`` on an existing run; the URI is explicit because the logger's default
    is read from the environment at import time (and MLflow 3 refuses a ``./mlruns`` store)."""
    return MLFlowLogger(tracking_uri=tracking_uri, run_id=run_id, log_model=log_checkpoints)


@dataclass(frozen=True)
class FitOutcome:
    loss_curve: list[dict[str, float]]
    best_checkpoint: str | None


def fit_module(module: LitMLP, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
        config: Any, logger: MLFlowLogger | bool) -> FitOutcome:
    """Train ``module`` in place; on return it holds the weights of the best ``val_loss`` epoch."""
    curve = LossCurve()
    with tempfile.TemporaryDirectory() as tmp, quiet_lightning(), torch_threads(config.num_threads):
        checkpoint = ModelCheckpoint(dirpath=tmp, filename="best-{epoch:02d}", monitor="val_loss",
                                     mode="min", save_top_k=1)
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, max_epochs=config.max_epochs, logger=logger,
            callbacks=[EarlyStopping(monitor="val_loss", patience=config.patience, mode="min"), checkpoint,
                       curve],
            enable_progress_bar=False, enable_model_summary=False, deterministic=True,
            num_sanity_val_steps=0, default_root_dir=tmp, log_every_n_steps=1,
        )
        trainer.fit(module, make_loader(*train, config.batch_size, True, config.seed),
                    make_loader(*val, EVAL_BATCH, False))
        best = checkpoint.best_model_path or None
        if best:  # our own file, written a moment ago: full unpickling is safe
            module.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["state_dict"])
    module.eval()
    return FitOutcome(curve.rows, best)


def run_test(module: LitMLP, x: np.ndarray, y: np.ndarray, logger: MLFlowLogger | bool, seed: int,
         num_threads: int = 1) -> dict[str, float]:
    """``trainer.test()`` on (x, y); returns the logged ``test_*`` metrics."""
    pl.seed_everything(seed, workers=True, verbose=False)
    with tempfile.TemporaryDirectory() as tmp, quiet_lightning(), torch_threads(num_threads):
        trainer = pl.Trainer(accelerator="cpu", devices=1, logger=logger, enable_progress_bar=False,
                             enable_model_summary=False, deterministic=True, default_root_dir=tmp,
                             enable_checkpointing=False)
        results = trainer.test(module, make_loader(x, y, EVAL_BATCH, False), verbose=False)
    return {k: float(v) for k, v in (results[0] if results else {}).items()}


def seed_everything(seed: int) -> None:
    pl.seed_everything(seed, workers=True, verbose=False)
