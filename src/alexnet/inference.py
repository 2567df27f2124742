"""Using trained weights: the one home of opening them and of how they see an image.

    >>> from alexnet.inference import open_trained
    >>> trained = open_trained("runs/fashion-mnist")          # a run folder or a weights file
    >>> with trained.running():                                # eval mode, weights cast once
    ...     logits = trained.logits(trained.batch([image]))    # the weights' own test views

``open_trained`` decides, once for every command that uses weights (``evaluate``, ``predict``,
``export``, the report, fine-tuning, the experiments, ``explain`` and ``serve``): which file a
source names, the device, the precision the weights were tested in, their test views
(``TestViews``) and where their data lives. ``TrainedModel.running`` is the one inference frame:
eval mode and each weight cast once to the precision (``perf.inference_weights``), restored after.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from .data.augment import normalize, to_float
from .data.loaders import LoaderOptions
from .data.augment_spec import AugmentConfig, resolve_augment, ten_views_unlike_training
from .data.test_time import resize_shorter_side, ten_crop
from .errors import AlexNetError
from .perf import autocast_context, compile_for_inference, inference_weights, prepare_model, recorded_precision, \
    resolve_device, resolve_precision, to_channels_last
from .runs import RunFolder
from .summary import summarize
from .weights import WeightsMetadata, format_problem, load_weights, read_metadata

VIEWS = ("centre", "mirror", "ten")


def trained_views_refusal(metadata, augment: str | None = None) -> str | None:
    """Why weights (``WeightsMetadata``) trained here may not be tested on the ten views, or None.

    ``augment`` is the training augmentation (a run folder's config.yaml, or an older file's
    metadata); without it, the crop fraction the weights' test views record says whether training
    cropped. Weights imported from elsewhere (their ``source``) say too little to refuse."""
    if metadata.source is not None:
        return None
    if augment is not None:
        reason = ten_views_unlike_training(resolve_augment(augment, metadata.dataset))
        trained = f"the augmentation {augment!r} on {metadata.dataset}"
    else:
        reason = "trains on whole images" if TestViews.from_metadata(metadata).crop_fraction == 1.0 else None
        trained = f"the training of these weights on {metadata.dataset}"
    if reason is None:
        return None
    return (f"ten-crop testing shows the network crops and mirrors as training did, but {trained} "
            f"{reason}; evaluate without --ten-crop (as the run tested: its own views are the default), "
            f"or with --flip where training mirrored")


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
        """The views of a resolved ``TrainConfig`` (its ``ten_crop``/``flip_test`` settled by ``resolved``,
        its augmentation parsed once, ``augment_config``)."""
        views = "ten" if config.ten_crop else "mirror" if config.flip_test else "centre"
        return cls(config.augment_config.crop_fraction, views)

    @classmethod
    def from_metadata(cls, metadata) -> "TestViews":
        """The views stored with weights (``WeightsMetadata``, which translates those of older files);
        weights that store none are tested on the centre of the whole image."""
        stored = metadata.test_views
        if stored is None:
            return cls()
        try:
            return cls(float(stored.get("crop_fraction", 1.0)), str(stored.get("views", "centre")))
        except (TypeError, ValueError):
            raise AlexNetError("the weights' test views are damaged; train or export them again") from None

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
    pre_logits: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, classes) of a batch from a test loader, over ``views`` (``TestViews`` or its name),
    under autocast to ``precision`` (None: none): the one place test views are applied.

    ``pre_logits``: also the FC7 features (B, D) of each image itself, from the same forward pass
    (``forward_head(..., pre_logits=True)`` then the classifier: the operations of ``model(images)``);
    for the centre view or the image and its mirror, as the ten views' images are larger than the
    network's input."""
    kind = views.views if isinstance(views, TestViews) else views
    if pre_logits and kind == "ten":
        raise ValueError("pre_logits needs the centre or mirror views: the ten views' images are larger than the "
                         "network's input; use views.choose(ten_crop=False)")
    with autocast_context(images.device, precision):
        if kind == "ten":
            size = tuple(model.input_size[1:])
            return ten_crop_logits(model, images.contiguous(memory_format=torch.channels_last), size).float()
        if pre_logits:
            features = model.forward_head(model.forward_features(images), pre_logits=True)
            logits = model.get_classifier()(features).float()
        else:
            logits = model(images).float()
        if kind == "mirror":
            logits = (logits + model(images.flip(3)).float()) / 2
    return (logits, features.float()) if pre_logits else logits



def ten_crop_shape(input_size: tuple[int, int, int]) -> tuple[int, int, int]:
    """Image size the ten crops are taken from: 256 for 224 crops, in proportion for others."""
    channels, height, width = input_size
    return channels, round(height * 256 / 224), round(width * 256 / 224)


# Compiling for inference (``perf.compile_for_inference``) costs 10-60 s of code generation and
# paid for itself after 54-218 batches of 32 images at 224x224 on a 2-core Xeon with AMX (README,
# "Performance"): 2-5 TMAC of arithmetic. A pass is compiled automatically from twice the worst of
# those: an ImageNet validation pass of alexnet_owt (50,000 x 0.7 GMAC) is, a Fashion-MNIST test pass
# of the small networks (10,000 x < 0.1 GMAC) and one image never are.
AUTO_COMPILE_MIN_MACS = 10e12
VIEW_COUNT = {"centre": 1, "mirror": 2, "ten": 10}


def worth_compiling(model: nn.Module, images: int, views: TestViews | str = "centre") -> bool:
    """Whether a pass of inference over ``images`` images seen as ``views`` is long enough for compiling
    to pay: at least ``AUTO_COMPILE_MIN_MACS`` multiply-accumulates, counted from the architecture."""
    kind = views.views if isinstance(views, TestViews) else views
    input_size = tuple(getattr(model, "input_size", ()) or ())
    if len(input_size) != 3 or images < 1:
        return False
    return summarize(model, input_size).macs * images * VIEW_COUNT[kind] >= AUTO_COMPILE_MIN_MACS


@contextlib.contextmanager
def inference_mode(model: nn.Module, precision: torch.dtype | None, *, compile: bool = False) -> Iterator[nn.Module]:
    """The one inference frame: eval mode, no gradients, each weight cast once to ``precision``
    (``perf.inference_weights``); the mode and the weights are restored on exit, even after an error.

    Yields the module to call: ``model`` itself, or with ``compile`` the model compiled with its
    (cast) weights frozen in (``perf.compile_for_inference``), valid within the frame only."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), inference_weights(model, precision):
            yield compile_for_inference(model) if compile else model
    finally:
        model.train(was_training)


# --- opening trained weights ------------------------------------------------------------------------


def weights_path(source: str | Path) -> Path:
    """The weights file ``source`` names: a ``.safetensors`` file, or a run folder's ``model.safetensors``.

    Refuses, saying what to pass, a path that does not exist and a run folder whose training has
    not finished (it has checkpoints but no final weights yet)."""
    path = Path(source)
    if path.is_dir():
        folder = RunFolder(path)
        if folder.weights.is_file():
            return folder.weights
        if folder.holds_run():
            raise AlexNetError(f"{path} holds no model.safetensors yet: its training has not finished (the weights "
                               f"are written after the final test). Wait for it, or continue a stopped run with "
                               f"alexnet train --resume {path}")
        raise AlexNetError(f"{path} holds no model.safetensors and is not a run folder (no config.yaml); pass a "
                           f"weights file or a finished run's folder")
    if not path.exists():
        raise AlexNetError(f"no {'weights file' if path.suffix else 'weights file or run folder'} at {path}")
    problem = format_problem(path)  # a checkpoint, a .pth, an export: what it is, and what to pass
    if problem:
        raise AlexNetError(problem)
    return path


def run_folder_of(source: str | Path) -> RunFolder | None:
    """The run folder ``source`` is or holds its weights in (``runs/x`` or ``runs/x/model.safetensors``)."""
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    return RunFolder(folder) if RunFolder(folder).config.is_file() else None


def read_trained_metadata(source: str | Path) -> WeightsMetadata:
    """The metadata of a weights file or run folder, without reading a tensor."""
    return read_metadata(weights_path(source))


def trained_data_dir(metadata: WeightsMetadata | None, run: RunFolder | None) -> str | None:
    """Where weights' dataset was found when they were trained: the metadata's ``data_dir``, or
    (weights written before it was stored there, or none readable) the run folder's config.yaml."""
    if metadata is not None and metadata.data_dir:
        return metadata.data_dir
    return _run_setting(run, "data_dir")


def _run_setting(run: RunFolder | None, key: str) -> str | None:
    """A text setting of a run folder's config.yaml; None where there is no run, no readable config or
    no such text."""
    if run is None:
        return None
    try:
        value = run.read_config().get(key)
    except AlexNetError:
        return None
    return value if isinstance(value, str) else None


@dataclass
class TrainedModel:
    """Trained weights ready to use: the model on its device, what the weights say of themselves, how
    they see a test image, and the precision to compute in."""

    model: nn.Module
    metadata: WeightsMetadata
    device: torch.device
    precision: torch.dtype | None  # autocast dtype; None: fp32
    views: TestViews
    source: Path | None = None  # the weights file; None for a model passed in memory

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.metadata.class_names)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.metadata.input_size)

    @property
    def run(self) -> RunFolder | None:
        return run_folder_of(self.source) if self.source is not None else None

    @property
    def data_dir(self) -> str | None:
        """Where the weights' dataset was found when they were trained (:func:`trained_data_dir`)."""
        return trained_data_dir(self.metadata, self.run)

    @property
    def training_augment(self) -> str | None:
        """The augmentation the weights were trained with, as their run folder's config.yaml records it."""
        return _run_setting(self.run, "augment")

    def loader_options(self, *, batch_size: int, dataset: str | None = None, data_dir: str | Path | None = None,
                       subset: float = 1.0) -> LoaderOptions:
        """How the weights' run split and normalised ``dataset`` (default: their own): its validation
        and test hold-outs and seed, the inputs' mean and std, the model's device; ``data_dir`` defaults
        to where the run found its dataset. For another dataset the validation size and seed are still
        the weights' own; its data dir and test hold-out are that dataset's defaults."""
        metadata = self.metadata
        own = dataset is None or dataset == metadata.dataset
        return LoaderOptions(
            data_dir=data_dir if data_dir is not None else (self.data_dir if own else None),
            batch_size=batch_size, val_size=metadata.val_size, seed=metadata.seed, device=self.device,
            normalization=(metadata.mean, metadata.std), subset=subset,
            # a flat folder's test split apart from validation; weights from before it was held out
            # say nothing, and their test was the validation images
            test_size=(metadata.test_size or 0) if own else None,
        )

    def with_views(self, *, ten_crop: bool | None = None, flip: bool | None = None) -> "TrainedModel":
        """The same model with a caller's choice of test views (None keeps the stored one)."""
        return replace(self, views=self.views.choose(ten_crop=ten_crop, flip=flip))

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """One (C, H, W) image, uint8 or float 0..1, prepared as the weights were tested."""
        return self.views.preprocess(image, self.input_size, self.metadata.mean, self.metadata.std)

    def batch(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Images prepared and stacked into one channels-last batch on the model's device."""
        return to_channels_last(torch.stack([self.preprocess(image) for image in images]).to(self.device))

    @contextlib.contextmanager
    def running(self, *, compile: bool = False) -> Iterator["TrainedModel"]:
        """The inference frame (:func:`inference_mode`) for this model and precision; with ``compile``,
        ``logits`` runs the model compiled with its weights frozen in (for a long stream of batches:
        :func:`worth_compiling`)."""
        with inference_mode(self.model, self.precision, compile=compile) as runner:
            yield replace(self, model=runner) if compile else self

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) of a prepared batch over the test views (call inside ``running``)."""
        return predict_logits(self.model, images, self.views, precision=self.precision)


def open_trained(
    source: str | Path | tuple[nn.Module, WeightsMetadata],
    *,
    device: str | torch.device = "auto",
    precision: str | None = None,
) -> TrainedModel:
    """Open trained weights for inference.

    Args:
        source: a weights file, a run folder (its ``model.safetensors``), or a (model,
            ``WeightsMetadata``) pair (the model is moved to ``device``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (or a ``torch.device``).
        precision: ``fp32``, ``bf16`` or ``auto``; None: the precision the weights were tested in.
    """
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    if isinstance(source, tuple):
        model, metadata = source
        if not isinstance(model, nn.Module) or not isinstance(metadata, WeightsMetadata):
            raise AlexNetError("pass a weights file, a run folder, or a (model, WeightsMetadata) pair")
        path = None
    else:
        path = weights_path(source)
        model, metadata = load_weights(path, device=str(torch_device))
    prepare_model(model, torch_device)
    dtype = resolve_precision(precision, torch_device) if precision else recorded_precision(metadata.precision,
                                                                                            torch_device)
    return TrainedModel(model, metadata, torch_device, dtype, TestViews.from_metadata(metadata), path)
