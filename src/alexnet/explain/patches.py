"""The image patches that drive each filter most: Zeiler and Fergus' Figure 2 (2014), for any layer.

For every filter (map) of a layer, the ``top`` images of a dataset whose strongest unit of that map
is strongest, and the patch of each image that unit sees (its receptive field,
``network.receptive_field``). One pass over the images, in batches; memory is bounded by the
result itself (filters x top patches), never by the number of images. Hand-written: neither
Captum nor pytorch-grad-cam searches a dataset for the inputs a unit prefers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..errors import AlexNetError
from ..inference import TrainedModel
from ..perf import autocast_context
from .attribution import display_images
from .network import ReceptiveField, conv_output, receptive_field

OUTSIDE = 0.5  # grey where a patch's field reaches past the image's border (the padding the layer saw)


@dataclass
class TopPatches:
    """Per filter of ``layer``, the ``top`` strongest images (one unit each), strongest first."""

    layer: str
    field: ReceptiveField
    values: np.ndarray  # (filters, top) float32: the strongest activation of the filter in each image
    images: np.ndarray  # (filters, top) int64: the image's position in the stream (loader order)
    positions: np.ndarray  # (filters, top, 2) int64: (row, column) of that unit in the layer's maps
    boxes: np.ndarray  # (filters, top, 4) int64: (top, left, bottom, right) in the input, clipped
    patches: np.ndarray  # (filters, top, size, size, C) float32 0..1; OUTSIDE beyond the image
    labels: np.ndarray  # (filters, top) int64: the images' classes
    images_seen: int
    kernels: np.ndarray | None = None  # (filters, in, k, k): the kernels themselves, for conv1

    def save(self, path: str | Path) -> Path:
        """Every array in one ``.npz`` file (NumPy's, read back with ``numpy.load``)."""
        path = Path(path)
        arrays = dict(values=self.values, images=self.images, positions=self.positions, boxes=self.boxes,
                      patches=self.patches, labels=self.labels,
                      field=np.array([self.field.size, self.field.stride, self.field.offset]))
        if self.kernels is not None:
            arrays["kernels"] = self.kernels
        np.savez_compressed(path, **arrays)
        return path


@torch.no_grad()
def top_patches(trained: TrainedModel, batches: Iterable, layer: str = "conv5", *, top: int = 9,
                limit: int | None = None) -> TopPatches:
    """Stream ``batches`` ((images, labels): prepared images (B, C, H, W) as a test loader gives them)
    once and keep, per filter of ``layer``, the ``top`` images whose strongest unit is strongest.

    ``limit`` stops after that many images. Activations are computed in the weights' precision
    (``trained.precision``), as ``alexnet predict`` computes. Each image counts once per filter
    (its strongest unit), as Zeiler and Fergus show one patch per image.
    """
    if top < 1:
        raise AlexNetError(f"--top must be at least 1, got {top}")
    model = trained.model
    output = conv_output(model, layer)
    field = receptive_field(model, layer)
    to_layer = model.features[: output.output_index + 1]
    filters = output.conv.out_channels
    values = torch.full((filters, 0), float("-inf"))
    images = torch.zeros((filters, 0), dtype=torch.long)
    positions = torch.zeros((filters, 0, 2), dtype=torch.long)
    labels = torch.zeros((filters, 0), dtype=torch.long)
    patches = torch.zeros((filters, 0, field.size, field.size, 0), dtype=torch.uint8)
    seen = 0
    with trained.running():
        for batch, batch_labels in batches:
            if limit is not None:
                batch, batch_labels = batch[: limit - seen], batch_labels[: limit - seen]
            if len(batch) == 0:
                break
            with autocast_context(trained.device, trained.precision):
                maps = to_layer(batch.to(trained.device)).float().cpu()  # (B, filters, h, w)
            width = maps.shape[-1]
            strongest, where = maps.flatten(2).max(2)  # (B, filters): each image's strongest unit
            candidate_values, candidate_rows = strongest.topk(min(top, len(batch)), dim=0)  # (count, filters)
            candidate_values, candidate_rows = candidate_values.T.contiguous(), candidate_rows.T.contiguous()
            candidate_where = where.T.gather(1, candidate_rows)  # (filters, count)
            candidate_positions = torch.stack([candidate_where // width, candidate_where % width], -1)
            held = values.shape[1]
            kept = torch.cat([values, candidate_values], 1).topk(min(top, held + candidate_values.shape[1]),
                                                                 dim=1).indices  # (filters, top)
            values = torch.cat([values, candidate_values], 1).gather(1, kept)
            images = torch.cat([images, candidate_rows + seen], 1).gather(1, kept)
            labels = torch.cat([labels, batch_labels.cpu()[candidate_rows]], 1).gather(1, kept)
            positions = torch.cat([positions, candidate_positions], 1).gather(1, kept[..., None].expand(-1, -1, 2))
            patches = _merge_patches(patches, kept, held, batch, candidate_rows, candidate_positions, field, trained)
            seen += len(batch)
            if limit is not None and seen >= limit:
                break
    if seen == 0:
        raise AlexNetError("no image to search: the dataset gave none")
    kernels = output.conv.weight.detach().float().cpu().numpy() if output.name == "conv1" else None
    height, width = trained.input_size[1:]
    boxes = np.array([[field.box(row, column, height, width) for row, column in unit] for unit in positions.tolist()],
                     dtype=np.int64).reshape(filters, -1, 4)
    return TopPatches(layer, field, values.numpy(), images.numpy(), positions.numpy(), boxes,
                      patches.float().div(255).numpy(), labels.numpy(), seen, kernels)


def _merge_patches(patches: torch.Tensor, kept: torch.Tensor, held: int, batch: torch.Tensor,
                   candidate_rows: torch.Tensor, candidate_positions: torch.Tensor, field: ReceptiveField,
                   trained: TrainedModel) -> torch.Tensor:
    """The uint8 patches (filters, top, size, size, C) of the merged top: those kept from before
    (``kept`` < ``held``) moved, the new ones cut from the batch; only the images that entered the
    top are made displayable, so a batch costs memory for its winners alone."""
    filters, count = kept.shape
    from_before = kept < held
    new = (~from_before).nonzero().tolist()  # (filter, slot) pairs taken from this batch
    rows = sorted({int(candidate_rows[f, kept[f, slot] - held]) for f, slot in new})
    shown = torch.from_numpy(display_images(batch[rows], trained.metadata)) if rows else None  # (N, H, W, C)
    channels = shown.shape[-1] if shown is not None else patches.shape[-1]
    merged = torch.full((filters, count, field.size, field.size, channels), round(OUTSIDE * 255), dtype=torch.uint8)
    if held:
        filter_index = torch.arange(filters)[:, None].expand(-1, count)
        merged[from_before] = patches[filter_index[from_before], kept[from_before]]
    height, width = batch.shape[-2:]
    for f, slot in new:
        candidate = int(kept[f, slot]) - held
        image = shown[rows.index(int(candidate_rows[f, candidate]))]
        row, column = candidate_positions[f, candidate].tolist()
        top_edge, left_edge, bottom, right = field.box(row, column, height, width)
        start_row = top_edge - (row * field.stride + field.offset)  # where the image begins inside the field
        start_column = left_edge - (column * field.stride + field.offset)
        merged[f, slot, start_row:start_row + bottom - top_edge, start_column:start_column + right - left_edge] = \
            (image[top_edge:bottom, left_edge:right] * 255).round().to(torch.uint8)
    return merged


def dataset_batches(trained: TrainedModel, *, split: str = "test", data_dir: str | None = None,
                    batch_size: int = 500):
    """A loader of the weights' own dataset (``split``), each image prepared as the test sees its
    centre view; refuses, saying what to do, weights whose dataset is not found here."""
    from ..evaluation import test_loader

    metadata = trained.metadata
    if not metadata.dataset:
        raise AlexNetError("these weights do not name their dataset; pass images to explain instead of --filters")
    views = trained.views.choose(ten_crop=False, flip=False)
    options = trained.loader_options(batch_size=batch_size, data_dir=data_dir or None)
    loader, _ = test_loader(metadata.dataset, views, trained.input_size, options, split=split)
    return loader
