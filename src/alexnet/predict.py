"""Class predictions for images with trained weights, each image prepared as the weights were tested.

    >>> from alexnet.predict import predict
    >>> for prediction in predict("runs/fashion-mnist/model.safetensors", ["shirt.png", "photos/"]):
    ...     print(prediction.source, prediction.classes[0], prediction.probabilities[0])

The preprocessing is the weights' own (``TestViews.preprocess``: resize, centre crop, channels,
mean/std) and so are the test views; both come with ``inference.open_trained``, nothing about them
is decided here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import torch
from torch import nn

from .data.images import decode, decode_problem
from .data.streaming import files_under
from .errors import AlexNetError
from .inference import open_trained
from .weights import WeightsMetadata

ImageInput = str | os.PathLike | torch.Tensor


@dataclass(frozen=True)
class Prediction:
    """The ``top_k`` classes of one image, most probable first."""

    source: str | int  # the image file's path, or the position of a tensor among the inputs
    classes: tuple[str, ...]
    probabilities: tuple[float, ...]  # softmax of the logits (over the test views)
    indices: tuple[int, ...]  # the classes' positions in the weights' class names

    def to_dict(self) -> dict:
        return {"source": self.source, "predictions": [
            {"class": name, "index": index, "probability": probability}
            for name, index, probability in zip(self.classes, self.indices, self.probabilities)]}


class Skipped(NamedTuple):
    """An input that could not be read as an image, and why."""

    source: str
    reason: str


class Predictions(list):
    """The ``Prediction`` of every image read, in input order; ``skipped``: the files left out."""

    def __init__(self, predictions=(), skipped: Sequence[Skipped] = ()) -> None:
        super().__init__(predictions)
        self.skipped = list(skipped)


def predict(
    model_or_weights: str | os.PathLike | tuple[nn.Module, WeightsMetadata],
    inputs: Sequence[ImageInput] | ImageInput,
    *,
    top_k: int = 5,
    batch_size: int = 32,
    device: str = "cpu",
    precision: str | None = None,
) -> Predictions:
    """The ``top_k`` classes of each image, as the weights were tested.

    Args:
        model_or_weights: a weights file, a run folder (its ``model.safetensors``), or a (model,
            ``WeightsMetadata``) pair (the model is moved to ``device`` and put in eval mode for the call).
        inputs: image files, folders (walked recursively, in sorted order, hidden files left out) and
            (C, H, W) tensors, uint8 or float 0..1, of 1 or 3 channels.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        precision: ``fp32``, ``bf16`` or ``auto``; None: the one the weights were tested in.

    Returns a list of ``Prediction`` (files in input order, a folder's in sorted order); files that
    cannot be read as images are left out and listed in its ``skipped``, never raised.
    """
    if top_k < 1:
        raise AlexNetError(f"top-k must be at least 1, got {top_k}")
    if batch_size < 1:
        raise AlexNetError(f"batch size must be at least 1, got {batch_size}")
    trained = open_trained(model_or_weights, device=device, precision=precision)
    metadata = trained.metadata
    top_k = min(top_k, metadata.num_classes)
    predictions, skipped = Predictions(), []
    with trained.running():
        for batch in _batches(_images(inputs, skipped), batch_size):
            logits = trained.logits(trained.batch([image for _, image in batch]))
            probabilities, indices = logits.softmax(-1).topk(top_k, dim=-1)
            for (source, _), row, classes in zip(batch, probabilities.tolist(), indices.tolist()):
                predictions.append(Prediction(source, tuple(metadata.class_names[i] for i in classes),
                                              tuple(row), tuple(classes)))
    predictions.skipped = skipped
    return predictions


def image_files(folder: Path) -> list[Path]:
    """Every file under ``folder``, recursively, in sorted order; hidden files left out. Symbolic
    links are followed as training's folders follow them (``files_under``): one that leads to
    ``folder``, above it or into a loop is refused."""
    return [Path(path) for path in files_under(Path(folder), Path(folder), root_name="the folder")]


def _images(inputs, skipped: list[Skipped]) -> Iterator[tuple[str | int, torch.Tensor]]:
    """(source, uint8 or float image) of each readable input, decoded one at a time; the others go to
    ``skipped``."""
    if isinstance(inputs, (str, os.PathLike, torch.Tensor)):
        inputs = [inputs]
    for position, item in enumerate(inputs):
        if isinstance(item, torch.Tensor):
            yield position, _checked_tensor(item, position)
            continue
        path = Path(item)
        if path.is_dir():
            files = image_files(path)
            if not files:
                skipped.append(Skipped(str(path), "an empty folder"))
        elif path.exists():
            files = [path]
        else:
            skipped.append(Skipped(str(path), "no such file or folder"))
            continue
        for file in files:
            try:
                image = decode(str(file))
            except Exception as error:  # not an image, damaged, unreadable, too large: listed, never fatal
                skipped.append(Skipped(str(file), decode_problem(error)))
            else:
                yield str(file), image


def _checked_tensor(image: torch.Tensor, position: int) -> torch.Tensor:
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise AlexNetError(f"input {position}: expected a (C, H, W) image of 1 or 3 channels, got shape "
                           f"{tuple(image.shape)}")
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise AlexNetError(f"input {position}: expected uint8 (0..255) or float (0..1) pixels, got {image.dtype}")
    return image.cpu()


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def read_images(inputs: Sequence[ImageInput] | ImageInput,
                skipped: list[Skipped]) -> Iterator[tuple[str | int, torch.Tensor]]:
    """(source, image) of each readable input, decoded one at a time, as ``predict`` reads them (folders
    walked, tensors checked); the inputs that cannot be read are appended to ``skipped``, never raised."""
    return _images(inputs, skipped)
