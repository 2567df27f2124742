"""What the report needs from a trained model: test predictions, FC7 features, thumbnails.

Everything is bounded (``test_limit``, ``pool_size``) so a report takes seconds on a CPU even for
large test sets; the numbers are returned as NumPy arrays for ``figures.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AlexNetError
from ..inference import inference_mode, predict_logits
from ..perf import autocast_context

THUMBNAIL_SIDE = 64  # images are kept for display at most this large (10k RGB thumbnails: 123 MB)


@dataclass
class Outputs:
    """A model's outputs on the first images of a loader, in loader order."""

    thumbnails: np.ndarray  # (N, h, w, C) float32 in 0..1, for display
    labels: np.ndarray  # (N,) int64
    probabilities: np.ndarray | None  # (N, classes) float32 softmax; None when not asked for
    features: np.ndarray  # (N, D) float32 FC7 activations (pre-logits)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Neighbours:
    """For each query, the nearest pool images in feature space."""

    query_index: np.ndarray  # (Q,) rows of the test outputs
    index: np.ndarray  # (Q, K) rows of the pool outputs, nearest first
    distance: np.ndarray  # (Q, K)


def _thumbnails(images: torch.Tensor, mean, std) -> np.ndarray:
    """Undo the normalisation of a batch (B, C, H, W) and shrink it for display, as (B, h, w, C)."""
    channels = images.shape[1]
    mean = torch.tensor(mean, dtype=images.dtype, device=images.device)
    std = torch.tensor(std, dtype=images.dtype, device=images.device)
    if len(mean) != channels:  # grey data shown to an RGB model (or back): use the first constants
        mean, std = mean[:1].expand(channels), std[:1].expand(channels)
    images = (images.float() * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)).clamp(0, 1)
    side = max(images.shape[-2:])
    if side > THUMBNAIL_SIDE:
        scale = THUMBNAIL_SIDE / side
        size = (max(1, round(images.shape[-2] * scale)), max(1, round(images.shape[-1] * scale)))
        images = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
    return images.permute(0, 2, 3, 1).contiguous().cpu().numpy().astype(np.float32)


def collect_outputs(model: nn.Module, loader, mean, std, *, limit: int, probabilities: bool = True,
                    views="centre", precision: torch.dtype | None = None) -> Outputs:
    """Run ``model`` over the first ``limit`` images of ``loader``.

    Probabilities are the softmax of the logits ``evaluate`` computes for ``views`` (the one
    implementation, ``inference.predict_logits``), so they agree with ``evaluation.json``;
    features are FC7 of the image itself.
    """
    thumbnails, labels, probs, features = [], [], [], []
    seen = 0
    with inference_mode(model, precision):
        for images, batch_labels in loader:
            images, batch_labels = images[: limit - seen], batch_labels[: limit - seen]
            if probabilities:  # the features come from the logits' own forward pass
                logits, feature = predict_logits(model, images, views, precision=precision, pre_logits=True)
                probs.append(logits.softmax(1).cpu())
            else:
                with autocast_context(images.device, precision):
                    feature = model.forward_head(model.forward_features(images), pre_logits=True)
            features.append(feature.float().cpu())
            thumbnails.append(_thumbnails(images, mean, std))
            labels.append(batch_labels.cpu())
            seen += len(batch_labels)
            if seen >= limit:
                break
    if not labels:
        raise AlexNetError("the loader gave no readable image")
    return Outputs(
        thumbnails=np.concatenate(thumbnails),
        labels=torch.cat(labels).numpy(),
        probabilities=torch.cat(probs).numpy() if probabilities else None,
        features=torch.cat(features).numpy(),
    )


def query_indices(labels: np.ndarray, count: int) -> np.ndarray:
    """The first test image of each of the first ``count`` classes present (one query per class)."""
    chosen, seen = [], set()
    for index, label in enumerate(labels.tolist()):
        if label not in seen:
            seen.add(label)
            chosen.append(index)
        if len(chosen) == count:
            break
    return np.asarray(chosen, dtype=np.int64)


def nearest_neighbours(queries: np.ndarray, pool: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and Euclidean distances of the ``k`` pool rows nearest each query row.

    Euclidean, as the paper's Section 6.1 measures FC7 similarity ("the smallest Euclidean
    distance"); exact, by ``torch.cdist`` over the whole (bounded) pool.
    """
    distances = torch.cdist(torch.from_numpy(queries).double(), torch.from_numpy(pool).double())
    values, indices = distances.topk(min(k, pool.shape[0]), dim=1, largest=False)
    return indices.numpy(), values.float().numpy()


def find_neighbours(test: Outputs, pool: Outputs, *, queries: int = 6, k: int = 6) -> Neighbours:
    """Nearest pool images of one test image per class (the first ``queries`` classes)."""
    rows = query_indices(test.labels, queries)
    index, distance = nearest_neighbours(test.features[rows], pool.features, k)
    return Neighbours(rows, index, distance)


def first_conv_weights(model: nn.Module) -> np.ndarray:
    """The kernels of the model's first convolution, (out, in, k, k)."""
    conv = next(module for module in model.modules() if isinstance(module, nn.Conv2d))
    return conv.weight.detach().float().cpu().numpy()
