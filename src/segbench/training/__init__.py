"""Training: one protocol for every backend, built from Lightning's own parts.

* :mod:`.recipe`: :class:`TrainRecipe`, the typed training recipe (``config/train/``), and the placement
  (devices, precision, DDP);
* :mod:`.data`: the fold's ``LightningDataModule`` (seeded loaders, DDP samplers);
* :mod:`.module`: the ``LightningModule`` (loss, optimiser and schedule, fine-tuning freeze, validation);
* :mod:`.metric`: segbench's confusion matrix as a ``torchmetrics.Metric`` (summed over processes);
* :mod:`.callbacks`: history and best weights, random states, the resumable checkpoint;
* :mod:`.resume`: which checkpoint belongs to which job;
* :mod:`.lr_finder`: the LR range test with fastai's valley rule;
* :mod:`.loggers`: CSV, TensorBoard or MLflow tracking;
* :mod:`.run`: :func:`train_model`, the job itself.

Lightning runs the loop (devices, mixed precision, progress bar, checkpoint/resume); segbench adds
the validation mIoU from its own confusion matrix (:mod:`segbench.metrics`), ``history.csv`` and the
final weights as ``model.safetensors`` (plain tensors: loading them runs no code).
"""

from .._compat import import_torchvision

import_torchvision()  # lightning -> torchmetrics -> torchvision: the CPU-wheel workaround first

from .lr_finder import find_lr, lr_valley  # noqa: E402
from .module import lr_lambda, set_bn_momentum  # noqa: E402
from .recipe import TrainRecipe, effective_train_config  # noqa: E402
from .run import train_model  # noqa: E402

__all__ = [
    "train_model",
    "TrainRecipe",
    "effective_train_config",
    "lr_lambda",
    "set_bn_momentum",
    "lr_valley",
    "find_lr",
]
