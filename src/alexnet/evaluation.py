"""Classification metrics (torchmetrics does the counting) and evaluation of a trained model."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics import MeanMetric, MetricCollection

from .data.augment import AugmentConfig, resolve_augment, ten_crop_logits
from .errors import AlexNetError


@dataclass
class Metrics:
    """Everything ``alexnet evaluate`` reports, as plain numbers (fractions, not percentages)."""

    count: int
    loss: float
    top1: float
    top5: float
    precision: list[float]  # per class
    recall: list[float]
    f1: list[float]
    macro_f1: float
    weighted_f1: float
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class
    class_names: list[str]

    @property
    def top1_error(self) -> float:
        return 1.0 - self.top1

    @property
    def top5_error(self) -> float:
        return 1.0 - self.top5

    def to_dict(self) -> dict:
        return asdict(self) | {"top1_error": self.top1_error, "top5_error": self.top5_error}

    @classmethod
    def from_dict(cls, values: dict) -> "Metrics":
        return cls(**{key: values[key] for key in cls.__dataclass_fields__})


class MetricAccumulator:
    """Accumulates logits batch by batch; under torch.distributed, ``compute`` covers every
    process's share (torchmetrics all-reduces its states)."""

    def __init__(self, class_names: list[str], device: torch.device | str = "cpu") -> None:
        classes = len(class_names)
        self.class_names = list(class_names)
        top_k = min(5, classes)
        self.metrics = MetricCollection(
            {
                "top1": MulticlassAccuracy(classes, top_k=1, average="micro"),
                "top5": MulticlassAccuracy(classes, top_k=top_k, average="micro"),
                "precision": MulticlassPrecision(classes, average="none", zero_division=0),
                "recall": MulticlassRecall(classes, average="none", zero_division=0),
                "f1": MulticlassF1Score(classes, average="none", zero_division=0),
                "macro_f1": MulticlassF1Score(classes, average="macro", zero_division=0),
                "weighted_f1": MulticlassF1Score(classes, average="weighted", zero_division=0),
                "confusion_matrix": MulticlassConfusionMatrix(classes),
            }
        ).to(device)
        self.loss = MeanMetric().to(device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.float()
        self.metrics.update(logits, labels)
        self.loss.update(F.cross_entropy(logits, labels, reduction="none"))

    def compute(self) -> Metrics:
        values = {name: value.cpu() for name, value in self.metrics.compute().items()}
        confusion = values["confusion_matrix"].long()
        return Metrics(
            count=int(confusion.sum()),
            loss=float(self.loss.compute()),
            top1=float(values["top1"]),
            top5=float(values["top5"]),
            precision=values["precision"].tolist(),
            recall=values["recall"].tolist(),
            f1=values["f1"].tolist(),
            macro_f1=float(values["macro_f1"]),
            weighted_f1=float(values["weighted_f1"]),
            confusion_matrix=confusion.tolist(),
            class_names=self.class_names,
        )


def compute_metrics(logits: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> Metrics:
    """Metrics of one set of logits (N, classes) against labels (N,)."""
    accumulator = MetricAccumulator(class_names, logits.device)
    accumulator.update(logits, labels)
    return accumulator.compute()


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    *,
    autocast: contextlib.AbstractContextManager | None = None,
    flip: bool = False,
) -> torch.Tensor:
    """Logits of a batch, averaged with those of the mirrored images when ``flip`` is set."""
    with autocast or contextlib.nullcontext():
        logits = model(images).float()
        if flip:
            logits = (logits + model(images.flip(3)).float()) / 2
    return logits


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader,
    class_names: list[str],
    *,
    device: torch.device | str = "cpu",
    autocast: contextlib.AbstractContextManager | None = None,
    flip: bool = False,
    ten_crop: bool = False,
    collect: bool = False,
) -> tuple[Metrics, torch.Tensor | None]:
    """Run ``model`` over ``loader``; returns the metrics and, with ``collect``, all logits (N, C).

    ``ten_crop`` averages the softmax of the paper's ten views (Section 4.1: four corners, the
    centre, and their mirrors) of each image, cropped to the model's input size.
    """
    was_training = model.training
    model.eval()
    accumulator = MetricAccumulator(class_names, device)
    collected = []
    try:
        for images, labels in loader:
            if ten_crop:
                with autocast or contextlib.nullcontext():  # the paper's ten views (Section 4.1)
                    logits = ten_crop_logits(model, images.contiguous(memory_format=torch.channels_last),
                                             tuple(model.input_size[1:])).float()
            else:
                logits = predict_logits(model, images, autocast=autocast, flip=flip)
            accumulator.update(logits, labels)
            if collect:
                collected.append(logits.cpu())
    finally:
        model.train(was_training)
    return accumulator.compute(), (torch.cat(collected) if collect else None)


def ten_crop_shape(input_size: tuple[int, int, int]) -> tuple[int, int, int]:
    """Image size the ten crops are taken from: 256 for 224 crops, in proportion for others."""
    channels, height, width = input_size
    return channels, round(height * 256 / 224), round(width * 256 / 224)


def run_test_views(metadata: dict) -> AugmentConfig:
    """How a run's test images were prepared, from its weights' metadata: the centre crop of its
    augmentation (the paper's takes 224/256 of the side, so the test images are enlarged to match
    the training crops; without it a network trained on crops sees objects at the wrong scale)."""
    return AugmentConfig(crop_fraction=resolve_augment(metadata.get("augment")).crop_fraction)


def evaluate(
    source: str | Path,
    *,
    dataset: str | None = None,
    split: str = "test",
    ten_crop: bool | None = None,
    flip: bool | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    precision: str | None = None,
    batch_size: int = 1000,
) -> Metrics:
    """Evaluate saved weights: a run folder (its ``model.safetensors``) or a weights file.

    By default the dataset, the validation split, the test-time views (flip averaging, ten crops)
    and the precision are those the run used, so evaluating a run's weights reproduces the numbers
    at the end of its training.
    """
    from .data import build_loaders
    from .perf import autocast_context, resolve_device, resolve_precision
    from .weights import load_weights

    source = Path(source)
    path = source / "model.safetensors" if source.is_dir() else source
    if split not in ("test", "val"):
        raise AlexNetError(f"split must be test or val, got {split!r}")
    torch_device = resolve_device(device)
    model, metadata = load_weights(path, device=str(torch_device))
    model.to(memory_format=torch.channels_last)
    ten_crop = bool(metadata.get("ten_crop", False)) if ten_crop is None else ten_crop
    name = dataset or metadata.get("dataset")
    if name is None:
        raise AlexNetError(f"{path} does not say which dataset it was trained on; pass --dataset")
    if data_dir is None and name == metadata.get("dataset"):  # where the run found it (a folder dataset's only home)
        data_dir = metadata.get("data_dir") or _run_data_dir(source)
    data = build_loaders(
        name, data_dir=data_dir, batch_size=batch_size, eval_batch_size=batch_size,
        output_shape=ten_crop_shape(model.input_size) if ten_crop else tuple(model.input_size),
        augment="none" if ten_crop else run_test_views(metadata),  # (the ten views are cut on the device)
        val_size=metadata.get("val_size"), subset=1.0, seed=metadata.get("seed", 0),
        device=torch_device, normalization=(metadata["mean"], metadata["std"]),
    )
    if len(data.classes) != model.num_classes:
        raise AlexNetError(f"{path} predicts {model.num_classes} classes but {name} has "
                           f"{len(data.classes)}; evaluate it on the dataset it was trained on")
    dtype = resolve_precision(precision or metadata.get("precision", "auto"), torch_device)
    use_flip = metadata.get("flip_test", False) if flip is None else flip
    metrics, _ = evaluate_model(
        model, data.test if split == "test" else data.val, list(metadata["class_names"]),
        device=torch_device, autocast=autocast_context(torch_device, dtype),
        flip=use_flip and not ten_crop, ten_crop=ten_crop,
    )
    return metrics


def _run_data_dir(source: Path) -> str | None:
    """The ``data_dir`` in a run folder's config.yaml (weights written before it was in their metadata)."""
    import yaml

    try:
        config = yaml.safe_load((source / "config.yaml").read_text()) if source.is_dir() else None
    except (OSError, ValueError, yaml.YAMLError):
        return None
    value = config.get("data_dir") if isinstance(config, dict) else None
    return value if isinstance(value, str) else None
