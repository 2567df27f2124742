"""The models a server holds: each opened once by ``inference.open_trained``, named, batched, and
described by its model card."""

from __future__ import annotations

import asyncio
import math
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..data.images import check_header, decode, decode_problem
from ..errors import AlexNetError
from ..inference import TrainedModel, open_trained, run_folder_of
from ..perf import precision_name
from ..summary import Summary, summarize
from .batching import DynamicBatcher
from .protocol import ProtocolError

if TYPE_CHECKING:
    from ..explain import Explanation

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a URL path segment, as Triton's model names are
CONFUSION_CLASSES = 30  # a confusion matrix is shown up to this many classes; past it, it is unreadable


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server."""

    max_body_bytes: int = 20 * 2**20  # 20 MiB: 30 prepared 224x224 images as FP32, or photos as files
    max_pixels: int = 40_000_000  # per image, read from its header before decoding (8000x5000 photos)
    max_images: int = 64  # per request: each becomes a C x H x W float image in memory
    timeout_s: float = 30.0  # from the request's arrival to its answer

    def __post_init__(self) -> None:
        flags = {"max_body_bytes": "--max-body-mb", "max_pixels": "--max-pixels", "max_images": "max_images",
                 "timeout_s": "--timeout-s"}
        for name, flag in flags.items():
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise AlexNetError(f"{flag} must be a positive number, got {value}")


class ImageRefused(ProtocolError):
    """An uploaded file refused: too large to decode (``status`` 413), or not a readable image (422)."""


@dataclass
class ServedModel:
    """Trained weights behind a name: their batcher, and how to prepare an uploaded file for them."""

    name: str
    trained: TrainedModel
    batcher: DynamicBatcher
    summary: Summary  # the architecture, worked out on the meta device before serving starts
    _architecture_png: bytes | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def ready(self) -> bool:
        return self.batcher.ready.is_set()

    def prepare_files(self, files: list[bytes], names: list[str], max_pixels: int) -> torch.Tensor:
        """Decode and prepare uploaded image files (runs in a worker thread: decoding is slow)."""
        return torch.stack([self.trained.preprocess(image) for image in decode_files(files, names, max_pixels)])

    async def explain(self, image: torch.Tensor, method: str, layer: str | None) -> Explanation:
        """The class of a decoded (C, H, W) uint8 image and its attribution map, by ``alexnet.explain``
        on the batcher's thread between batches: in fp32, whatever precision the batches run in, and
        never beside a batch (attribution hooks the model and changes its activations while it runs)."""
        from ..explain import explain

        if self.batcher.failure:
            raise ProtocolError(503, f"model {self.name} failed to start: {self.batcher.failure}")
        try:
            future = self.batcher.run_job(lambda: explain(self.trained, [image], method=method, layer=layer)[0])
        except AlexNetError as error:
            raise ProtocolError(503, str(error)) from None
        return await asyncio.wrap_future(future)


    async def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) of prepared images over the test views, from the batcher's next batch."""
        if self.batcher.failure:
            raise ProtocolError(503, f"model {self.name} failed to start: {self.batcher.failure}")
        try:
            future = self.batcher.submit(images)
        except AlexNetError as error:
            raise ProtocolError(503, str(error)) from None
        return await asyncio.wrap_future(future)

    def architecture_png(self) -> bytes:
        """The network's picture (``summary --plot``), drawn once on first use."""
        from ..diagram import draw_network

        with self._lock:
            if self._architecture_png is None:
                with tempfile.TemporaryDirectory() as folder:
                    path = draw_network(self.summary, Path(folder) / "architecture.png",
                                        towers=getattr(self.trained.model, "towers", 1))
                    self._architecture_png = path.read_bytes()
            return self._architecture_png

    def card(self) -> dict:
        """What the page shows of the weights: the model card."""
        trained, metadata = self.trained, self.trained.metadata
        image_shape = self.batcher.image_shape
        crop = tuple(trained.input_size[1:])
        side = round(min(image_shape[1:]) / trained.views.loader_augment().crop_fraction)
        card = {
            "name": self.name,
            "model": metadata.model,
            "parameters": sum(parameter.numel() for parameter in trained.model.parameters()),
            "input_size": list(trained.input_size),
            "class_names": list(metadata.class_names),
            "dataset": metadata.dataset,
            "epochs": metadata.epochs,
            "source": metadata.source,
            "weights": trained.source.name if trained.source else None,
            "device": str(trained.device),
            "precision": precision_name(trained.precision),
            "max_batch": self.batcher.max_batch,
            "preprocessing": {
                "resize_shorter_side": side,
                "crop": list(image_shape[1:]) if trained.views.views == "ten" else list(crop),
                "views": trained.views.describe(),
                "colour": "grey" if len(metadata.mean) == 1 else "RGB",
                "mean": list(metadata.mean),
                "std": list(metadata.std),
            },
            "test": {"top1": metadata.test_top1, "top5": metadata.test_top5},
        }
        run = run_folder_of(trained.source) if trained.source else None
        evaluation = run.read_evaluation()[0] if run is not None else None
        if evaluation is not None:
            card["test"] = {key: evaluation.get(key) for key in ("top1", "top5", "macro_f1", "count", "loss")}
            if len(evaluation["class_names"]) <= CONFUSION_CLASSES:
                card["confusion_matrix"] = evaluation["confusion_matrix"]
        return card


def decode_files(files: list[bytes], names: list[str], max_pixels: int) -> list[torch.Tensor]:
    """Uploaded image files as (3, H, W) uint8 images; each size is checked from its header before
    decoding (``ImageRefused``: 413 over ``max_pixels``, 422 not an image or damaged)."""
    images = []
    for data, name in zip(files, names):
        try:
            found = check_header(data, limit=max_pixels)  # a decompression bomb stops here, undecoded
        except ValueError as error:
            raise ImageRefused(413, f"{name}: {error}") from None
        if found is None:  # only what Pillow can read a header of: every size is checked first
            raise ImageRefused(422, f"{name} is not an image file (JPEG, PNG, WebP, GIF, BMP or TIFF), or its "
                                    f"header is damaged")
        try:
            images.append(decode(data, max_pixels=max_pixels))
        except Exception as error:  # damaged or truncated pixel data
            raise ImageRefused(422, f"{name}: cannot decode this {found} ({decode_problem(error)})") from None
    return images


def model_name(source: str) -> tuple[str, str]:
    """(name, path) of a ``serve`` argument: ``NAME=PATH``, or a path named after its run folder or file."""
    name, separator, path = source.partition("=")
    if not separator or not NAME.fullmatch(name):
        path = source
        located = Path(source)
        run = run_folder_of(located) if located.exists() else None
        name = run.directory.resolve().name if run is not None else located.stem
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", name).lstrip("-._")[:64] or "model"
    return name, path


def open_models(sources: list[str], *, device: str = "auto", precision: str | None = None,
                max_batch: int = 32, max_delay_s: float = 0.005) -> list[ServedModel]:
    """Open every source once (``open_trained``) and give each its batcher; names must differ."""
    if not sources:
        raise AlexNetError("give at least one weights file or run folder to serve")
    models: dict[str, ServedModel] = {}
    for source in sources:
        name, path = model_name(source)
        if name in models:
            raise AlexNetError(f"two models are named {name!r}; name them apart with NAME=PATH, e.g. {name}-2={path}")
        trained = open_trained(path, device=device, precision=precision)
        summary = summarize(trained.model, tuple(trained.input_size), name=trained.metadata.model)
        batcher = DynamicBatcher(trained, max_batch=max_batch, max_delay_s=max_delay_s)
        models[name] = ServedModel(name, trained, batcher, summary)
    return list(models.values())
