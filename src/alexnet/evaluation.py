"""Classification metrics (torchmetrics does the counting) and evaluation of a trained model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics import MeanMetric, MetricCollection

from .data.augment import AugmentConfig, normalize, resize_shorter_side, resolve_augment, ten_crop, to_float
from .errors import AlexNetError
from .perf import autocast_context, inference_weights


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


# --- how test images are shown to a trained network ----------------------------------------

VIEWS = ("centre", "mirror", "ten")


@dataclass(frozen=True)
class TestViews:
    """How a trained network sees a test image: the one place this is decided.

    ``crop_fraction`` is the centre crop matching the training crops (the paper's 224/256: a network
    trained on crops would otherwise see objects at another scale). ``views``: ``"centre"`` the crop
    alone; ``"mirror"`` it and its mirror, logits averaged; ``"ten"`` the paper's ten views (Section
    4.1: four corners, centre and their mirrors, cut from the image enlarged by 256/224), softmax
    averaged. Derived from the training configuration (``from_config``), stored with the weights
    (``to_dict``/``from_metadata``), and read by evaluate, the report and prediction alike.
    """

    __test__ = False  # not a pytest test class, whatever its name
    crop_fraction: float = 1.0
    views: str = "centre"

    def __post_init__(self) -> None:
        if self.views not in VIEWS:
            raise AlexNetError(f"test views must be one of {', '.join(VIEWS)}, got {self.views!r}")
        if not 0 < self.crop_fraction <= 1:
            raise AlexNetError(f"test crop fraction must be in (0, 1], got {self.crop_fraction!r}")

    @classmethod
    def from_config(cls, config) -> "TestViews":
        """The views of a resolved ``TrainConfig`` (its ``ten_crop``/``flip_test`` settled by ``resolved``)."""
        views = "ten" if config.ten_crop else "mirror" if config.flip_test else "centre"
        return cls(resolve_augment(config.augment, config.dataset).crop_fraction, views)

    @classmethod
    def from_metadata(cls, metadata) -> "TestViews":
        """The views stored with weights (``WeightsMetadata``); weights written before they were
        stored carry the run's augmentation preset and its ``ten_crop``/``flip_test`` switches."""
        stored = metadata.test_views
        if stored is not None:
            try:
                return cls(float(stored.get("crop_fraction", 1.0)), str(stored.get("views", "centre")))
            except (TypeError, ValueError):
                raise AlexNetError("the weights' test views are damaged; train or export them again") from None
        views = "ten" if metadata.ten_crop else "mirror" if metadata.flip_test else "centre"
        return cls(resolve_augment(metadata.augment, metadata.dataset).crop_fraction, views)

    def to_dict(self) -> dict:
        return {"crop_fraction": self.crop_fraction, "views": self.views}

    def choose(self, *, ten_crop: bool | None = None, flip: bool | None = None) -> "TestViews":
        """These views with a caller's choice (``alexnet evaluate --ten-crop/--flip``); None keeps them."""
        views = self.views
        if ten_crop is not None:
            views = "ten" if ten_crop else ("mirror" if views == "mirror" else "centre")
        if flip is not None and views != "ten":
            views = "mirror" if flip else "centre"
        return replace(self, views=views)

    def loader_shape(self, input_size: tuple[int, int, int]) -> tuple[int, int, int]:
        """The image size a test loader yields: the model's input, or 256/224 of it for ten views."""
        return ten_crop_shape(input_size) if self.views == "ten" else tuple(input_size)

    def loader_augment(self) -> AugmentConfig:
        """The loader's preprocessing: the centre crop (ten views are cut from the whole enlarged image)."""
        return AugmentConfig(crop_fraction=1.0 if self.views == "ten" else self.crop_fraction)

    def preprocess(self, image: torch.Tensor, input_size: tuple[int, int, int], mean: tuple[float, ...],
                   std: tuple[float, ...]) -> torch.Tensor:
        """One image (C, H, W), uint8 or float 0..1, grey or RGB, as ``predict_logits`` takes it for these
        views: (input_size[0], *loader_shape(input_size)[1:]).

        ``mean``/``std`` are the training data's (``WeightsMetadata``'s, grey or RGB): the image is made
        grey or RGB as that data was, normalised, then given the model's channels, as the loaders do.

        The shorter side is resized to the crop's size / ``crop_fraction`` (256 for 224 crops) by
        ``data.resize_shorter_side`` and the centre cut out, as the streaming test loaders and
        torchvision's ``ImageClassification`` preset do.
        """
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise AlexNetError(f"expected a (C, H, W) image of 1 or 3 channels, got shape {tuple(image.shape)}")
        height, width = self.loader_shape(input_size)[1:]
        side = round(min(height, width) / self.loader_augment().crop_fraction)  # 256 for 224 at 224/256
        resized = resize_shorter_side(image, side)
        image = to_float(TF.center_crop(resized, [height, width]))  # (C, height, width), 0..1
        if image.shape[0] == 1 and len(mean) == 3:
            image = image.expand(3, -1, -1)
        elif image.shape[0] == 3 and len(mean) == 1:
            image = TF.rgb_to_grayscale(image)
        return normalize(image, mean, std, channels=input_size[0])

    def describe(self) -> str:
        return {"centre": "centre crop", "mirror": "image and mirror", "ten": "ten views"}[self.views]


@torch.no_grad()
def ten_crop_logits(model: nn.Module, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Log of the softmax averaged over the ten views (the paper's test-time prediction), (B, classes).

    ``images`` are normalised (B, C, H, W) images, cut here into the ten ``size`` views of Section
    4.1 (``data.ten_crop``). The result is a valid logit vector: ``argmax``, top-k and cross-entropy
    work on it unchanged.
    """
    views = ten_crop(images, size)  # (B, 10, C, *size)
    batch, count = views.shape[:2]
    logits = model(views.flatten(0, 1)).view(batch, count, -1)
    return logits.float().softmax(-1).mean(1).log()


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    views: TestViews | str = "centre",
    *,
    precision: torch.dtype | None = None,
) -> torch.Tensor:
    """Logits (B, classes) of a batch from a test loader, over ``views`` (``TestViews`` or its name),
    under autocast to ``precision`` (None: none): the one place test views are applied."""
    kind = views.views if isinstance(views, TestViews) else views
    with autocast_context(images.device, precision):
        if kind == "ten":
            size = tuple(model.input_size[1:])
            return ten_crop_logits(model, images.contiguous(memory_format=torch.channels_last), size).float()
        logits = model(images).float()
        if kind == "mirror":
            logits = (logits + model(images.flip(3)).float()) / 2
    return logits


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
) -> tuple[Metrics, torch.Tensor | None]:
    """Run ``model`` over ``loader`` as ``views`` say, under autocast to ``precision`` (None: fp32)
    with the weights cast once for the pass (``perf.inference_weights``); returns the metrics and,
    with ``collect``, all logits (N, C)."""
    was_training = model.training
    model.eval()
    accumulator = MetricAccumulator(class_names, device)
    collected = []
    try:
        with inference_weights(model, precision):
            for images, labels in loader:
                logits = predict_logits(model, images, views, precision=precision)
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


def test_loader(dataset: str, views: TestViews, input_size: tuple[int, int, int], *, split: str = "test",
                data_dir: str | Path | None = None, batch_size: int = 1000, val_size: int | None = None,
                seed: int = 0, device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
                channels_last: bool = True, normalization=None):
    """A loader of one evaluation split prepared for ``views``; returns (loader, class names).

    Builds only that split: the training set is read only to hold out the validation images.
    """
    from .data import build_eval_loader

    if split not in ("test", "val"):
        raise AlexNetError(f"split must be test or val, got {split!r}")
    loader, classes, _ = build_eval_loader(
        dataset, split, data_dir=data_dir, batch_size=batch_size, output_shape=views.loader_shape(input_size),
        augment=views.loader_augment(), val_size=val_size, seed=seed, device=device, rank=rank,
        world_size=world_size, channels_last=channels_last, normalization=normalization,
    )
    return loader, classes


test_loader.__test__ = False  # a loader of test images, not a pytest test


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
    from .perf import prepare_model, resolve_device, resolve_precision
    from .weights import load_weights

    source = Path(source)
    path = source / "model.safetensors" if source.is_dir() else source
    if split not in ("test", "val"):
        raise AlexNetError(f"split must be test or val, got {split!r}")
    torch_device = resolve_device(device)
    model, metadata = load_weights(path, device=str(torch_device))
    prepare_model(model, torch_device)
    views = TestViews.from_metadata(metadata).choose(ten_crop=ten_crop, flip=flip)
    name = dataset or metadata.dataset
    if name is None:
        raise AlexNetError(f"{path} does not say which dataset it was trained on; pass --dataset")
    if data_dir is None and name == metadata.dataset:  # where the run found it (a folder dataset's only home)
        data_dir = metadata.data_dir or _run_data_dir(source)
    loader, classes = test_loader(
        name, views, tuple(model.input_size), split=split, data_dir=data_dir, batch_size=batch_size,
        val_size=metadata.val_size, seed=metadata.seed, device=torch_device,
        normalization=(metadata.mean, metadata.std),
    )
    if len(classes) != model.num_classes:
        raise AlexNetError(f"{path} predicts {model.num_classes} classes but {name} has "
                           f"{len(classes)}; evaluate it on the dataset it was trained on")
    dtype = resolve_precision(precision or metadata.precision, torch_device)
    metrics, _ = evaluate_model(model, loader, list(metadata.class_names), device=torch_device,
                                precision=dtype, views=views)
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
