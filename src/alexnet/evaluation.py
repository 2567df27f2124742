"""Classification metrics, counted batch by batch and summed over processes, and evaluation of a trained model."""

from __future__ import annotations

import warnings
from dataclasses import MISSING, asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch._dynamo.exc import TorchDynamoException

from .data.loaders import LoaderOptions
from .errors import AlexNetError
from .inference import (
    TestViews, inference_mode, open_trained, predict_logits, trained_views_refusal, worth_compiling,
)

SPLITS = ("test", "val", "train")  # what evaluate measures: "train" is the training images, unaugmented


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
    # The mean of the per-class recalls (classes with images): top-1 as if every class had as many
    # images, which an imbalanced set's top-1 is not (sklearn's balanced_accuracy_score).
    balanced_accuracy: float = float("nan")

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
        """From ``to_dict``'s mapping; keys added since (balanced accuracy) may be missing from older files."""
        return cls(**{key: values[key] for key, field in cls.__dataclass_fields__.items()
                      if key in values or field.default is MISSING})


@dataclass
class Evaluation:
    """Metrics with what they measured: the split, the dataset, the test-time views and the epochs the
    weights had trained. ``to_dict`` is the layout of a run's ``evaluation.json``, and of what
    ``alexnet evaluate --json`` prints and ``--out`` writes."""

    metrics: Metrics
    split: str
    dataset: str
    views: str
    epochs: int | None

    def to_dict(self) -> dict:
        return {"split": self.split, "dataset": self.dataset, "views": self.views, "epochs": self.epochs,
                **self.metrics.to_dict()}


class MetricAccumulator:
    """Counts, batch by batch, what every metric is computed from: the confusion matrix, the images
    whose label is among the top 5 logits, and the summed loss. Under torch.distributed,
    ``compute`` sums those counts over every process (one all-reduce), so the metrics are the whole
    set's, each process having seen its own share."""

    def __init__(self, class_names: list[str], device: torch.device | str = "cpu") -> None:
        self.class_names = list(class_names)
        self.classes = len(self.class_names)
        self.top_k = min(5, self.classes)
        # int64 counts and a float64 loss sum: exact over any number of images and processes
        self.confusion = torch.zeros(self.classes * self.classes, dtype=torch.int64, device=device)
        self.in_top_k = torch.zeros((), dtype=torch.int64, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits, labels = logits.float(), labels.to(logits.device)
        if logits.ndim != 2 or logits.shape[1] != self.classes or labels.shape != logits.shape[:1]:
            raise ValueError(f"expected logits (N, {self.classes}) and N labels, got {tuple(logits.shape)} "
                             f"and {tuple(labels.shape)}")
        if len(labels):
            low, high = (int(value) for value in labels.aminmax())
            if low < 0 or high >= self.classes:
                raise ValueError(f"labels must be class indices 0..{self.classes - 1}, got {low}..{high}")
        predicted = logits.argmax(1)
        self.confusion += torch.bincount(labels * self.classes + predicted, minlength=self.classes ** 2)
        self.in_top_k += (logits.topk(self.top_k, dim=1).indices == labels[:, None]).any(1).sum()
        self.loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()

    def compute(self) -> Metrics:
        confusion, in_top_k, loss_sum = self.confusion.clone(), self.in_top_k.clone(), self.loss_sum.clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for count in (confusion, in_top_k, loss_sum):
                torch.distributed.all_reduce(count)
        confusion = confusion.view(self.classes, self.classes).cpu()
        count = int(confusion.sum())
        true_positives = confusion.diagonal().double()
        predicted, support = confusion.sum(0).double(), confusion.sum(1).double()
        precision = _ratio(true_positives, predicted)
        recall = _ratio(true_positives, support)
        f1 = _ratio(2 * true_positives, predicted + support)  # 2PR / (P + R), 0 where a class has neither
        seen = (predicted + support) > 0  # the macro average leaves out classes neither present nor predicted
        return Metrics(
            count=count,
            loss=float(loss_sum) / count if count else float("nan"),
            top1=float(true_positives.sum()) / count if count else 0.0,
            top5=int(in_top_k) / count if count else 0.0,
            precision=precision.tolist(),
            recall=recall.tolist(),
            f1=f1.tolist(),
            macro_f1=float(f1[seen].mean()) if seen.any() else 0.0,
            weighted_f1=float((f1 * support).sum() / support.sum()) if count else 0.0,
            confusion_matrix=confusion.tolist(),
            class_names=self.class_names,
            balanced_accuracy=balanced_accuracy(confusion),
        )


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's ``zero_division=0``)."""
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.zeros_like(numerator))


def balanced_accuracy(confusion: torch.Tensor) -> float:
    """The mean recall over the classes that have images, from a confusion matrix (rows: true class)."""
    support = confusion.sum(1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((confusion.diagonal()[present].double() / support[present]).mean())


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader,
    class_names: list[str],
    *,
    device: torch.device | str = "cpu",
    precision: torch.dtype | None = None,
    views: TestViews | str = "centre",
    collect: bool = False,
    compile: bool | None = False,
) -> tuple[Metrics, torch.Tensor | None]:
    """Run ``model`` over ``loader`` as ``views`` say, under autocast to ``precision`` (None: fp32)
    with the weights cast once for the pass (``perf.inference_weights``); returns the metrics and,
    with ``collect``, all logits (N, C).

    ``compile``: True runs the model compiled with its weights frozen in
    (``perf.compile_for_inference``); None compiles where the pass is long enough to pay for it
    (``inference.worth_compiling``), and runs eager if compiling fails (no C++ compiler, say)."""
    accumulator = MetricAccumulator(class_names, device)
    collected = []
    automatic = compile is None
    if automatic:
        compile = worth_compiling(model, getattr(loader, "num_images", 0), views)
    with inference_mode(model, precision, compile=bool(compile)) as runner:
        for images, labels in loader:
            try:
                logits = predict_logits(runner, images, views, precision=precision)
            except TorchDynamoException as error:
                if not automatic or runner is model:
                    raise
                warnings.warn(f"compiling {type(model).__name__} for inference failed ({str(error).splitlines()[0]}); "
                              f"evaluating eager", RuntimeWarning, stacklevel=2)
                runner = model
                logits = predict_logits(runner, images, views, precision=precision)
            accumulator.update(logits, labels)
            if collect:
                collected.append(logits.cpu())
    return accumulator.compute(), (torch.cat(collected) if collect else None)


def test_loader(dataset: str, views: TestViews, input_size: tuple[int, int, int], options: LoaderOptions, *,
                split: str = "test"):
    """A loader of one evaluation split prepared for ``views``; returns (loader, class names).

    ``options`` say which images and where the batches go (``options.evaluation_batch_size`` to a
    batch); the image size and crop are the views' own, whatever ``options`` hold. ``split`` is
    ``test``, ``val``, or ``train``: the training images left after the validation split, of which
    ``subset`` as training took them, unaugmented. Builds only that split: the training set is read
    only to hold out the validation images.
    """
    from .data import build_eval_loader

    if split not in SPLITS:
        raise AlexNetError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    options = replace(options, output_shape=views.loader_shape(input_size), augment=views.loader_augment())
    loader, classes, _ = build_eval_loader(dataset, split, options)
    return loader, classes


test_loader.__test__ = False  # a loader of test images, not a pytest test


def evaluate(source: str | Path, **options) -> Metrics:
    """Evaluate saved weights: a run folder (its ``model.safetensors``) or a weights file; the metrics
    alone (``evaluate_weights`` takes the same options and says what they measured)."""
    return evaluate_weights(source, **options).metrics


def evaluate_weights(
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
    subset: float = 1.0,
    compile: bool | None = None,
) -> Evaluation:
    """Evaluate saved weights: a run folder (its ``model.safetensors``) or a weights file.

    By default the dataset, the validation split, the test-time views (flip averaging, ten crops)
    and the precision are those the run used, so evaluating a run's weights reproduces the numbers
    at the end of its training: the test as its final test, ``split="val"`` on the image alone, as
    its last epoch's validation. ``split="train"`` measures how well the training images themselves
    (``subset`` of them, as the run took them) are fitted. ``compile``: None compiles the model
    (weights frozen in) where the pass is long enough to pay for it (``inference.worth_compiling``);
    True or False decide.
    """
    if split not in SPLITS:
        raise AlexNetError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "val" and ten_crop is None and flip is None:
        ten_crop = flip = False  # as training validated each epoch: the image alone, so the numbers are its
    trained = open_trained(source, device=device, precision=precision)
    refusal = None
    if ten_crop and trained.views.views != "ten":
        refusal = trained_views_refusal(trained.metadata, trained.training_augment)
    if refusal:  # as `alexnet train --ten-crop` refuses it
        raise AlexNetError(refusal)
    trained = trained.with_views(ten_crop=ten_crop, flip=flip)
    metadata = trained.metadata
    name = dataset or metadata.dataset
    if name is None:
        raise AlexNetError(f"{trained.source} does not say which dataset it was trained on; pass --dataset")
    options = trained.loader_options(batch_size=batch_size, dataset=name, data_dir=data_dir, subset=subset)
    data_dir = options.data_dir
    loader, classes = test_loader(name, trained.views, trained.input_size, options, split=split)
    if metadata.test_files and split == "test" and name == metadata.dataset and data_dir:
        from .data import files_digest

        if files_digest(loader.samples, data_dir) != metadata.test_files:
            raise AlexNetError(
                f"the files of {data_dir} have changed since {trained.source} was trained: its held-out test "
                f"split would now hold other images, some perhaps trained on; evaluate on the folder as it was "
                f"(or --split val)")
    if len(classes) != metadata.num_classes:
        raise AlexNetError(f"{trained.source} predicts {metadata.num_classes} classes but {name} has "
                           f"{len(classes)}; evaluate it on the dataset it was trained on")
    metrics, _ = evaluate_model(trained.model, loader, list(metadata.class_names), device=trained.device,
                                precision=trained.precision, views=trained.views, compile=compile)
    return Evaluation(metrics, split, name, trained.views.views, metadata.epochs)

