"""The pictures of ``alexnet explain``, each a function from what the library returns to a matplotlib
``Figure``: an attribution beside its image, a layer's maps, the top patches of filters."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .attribution import Explanation, FeatureMaps  # noqa: E402
from .patches import TopPatches  # noqa: E402

SIGNED_METHODS = ("occlusion", "integrated-gradients")  # maps with evidence against the class too
MAPS_PER_LAYER = 32  # the strongest maps of each layer shown (conv3 of alexnet_paper has 384)
GAP_COLOUR = (0.55, 0.75, 0.95)  # between tiles: a colour no grey image contains


def save_figure(figure: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``figure`` as a PNG and release its memory; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


def _rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 1 or 3) 0..1 as (H, W, 3): grey images drawn as equal R, G, B."""
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def _scaled(attribution: np.ndarray, method: str) -> tuple[np.ndarray, str, float, float]:
    """The map, its colour map and limits: signed maps symmetric about 0, the others from 0 up."""
    if method in SIGNED_METHODS:
        limit = float(np.abs(attribution).max()) or 1.0
        return attribution, "RdBu_r", -limit, limit
    return attribution, "inferno", 0.0, float(attribution.max()) or 1.0


def overlay(image: np.ndarray, attribution: np.ndarray, method: str) -> np.ndarray:
    """The image dimmed and the map's positive part laid over it in the colour map (H, W, 3)."""
    positive = np.clip(attribution, 0, None)
    peak = float(positive.max()) or 1.0
    heat = plt.get_cmap("jet")(positive / peak)[..., :3]
    alpha = 0.55 * (positive / peak)[..., None]
    return np.clip((1 - alpha) * 0.8 * _rgb(image) + alpha * heat, 0, 1)


def explanation_figure(item: Explanation) -> Figure:
    """The image, the attribution map and the overlay side by side; the class and probability above."""
    figure, axes = plt.subplots(1, 3, figsize=(9, 3.5))
    values, colours, low, high = _scaled(item.attribution, item.method)
    axes[0].imshow(_rgb(item.image), interpolation="nearest")
    axes[0].set_title("image (as the network sees it)", fontsize=9)
    shown = axes[1].imshow(values, cmap=colours, vmin=low, vmax=high, interpolation="nearest")
    axes[1].set_title(item.method + (f" at {item.layer}" if item.layer else ""), fontsize=9)
    figure.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04)
    axes[2].imshow(overlay(item.image, item.attribution, item.method), interpolation="nearest")
    axes[2].set_title("overlay (positive evidence)", fontsize=9)
    for axis in axes:
        axis.set_axis_off()
    title = f"{item.class_name}: p = {item.probability:.3f}"
    if item.class_index != item.predicted_index:
        title += f"  (predicted: {item.predicted_name}, p = {item.predicted_probability:.3f})"
    figure.suptitle(f"{Path(str(item.source)).name}  |  {title}", fontsize=10)
    figure.tight_layout()
    return figure


def _mosaic(tiles: np.ndarray, columns: int, gap: int = 1) -> np.ndarray:
    """Tiles (N, h, w, 3) as one image of ``columns`` per row, a coloured gap between them."""
    count, height, width = tiles.shape[:3]
    rows = -(-count // columns)
    mosaic = np.empty((rows * (height + gap) + gap, columns * (width + gap) + gap, 3))
    mosaic[:] = GAP_COLOUR
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        top, left = gap + row * (height + gap), gap + column * (width + gap)
        mosaic[top:top + height, left:left + width] = tile
    return mosaic


def feature_maps_figure(maps: FeatureMaps, *, per_layer: int = MAPS_PER_LAYER) -> Figure:
    """The image, then one grid per convolution of its strongest ``per_layer`` maps (each scaled to
    its own 0..max, as the Deep Visualization Toolbox shows them), strongest first."""
    layers = list(maps.layers.items())
    columns = 16
    heights = [max(1, -(-min(per_layer, len(stack)) // columns)) for _, stack in layers]
    figure = plt.figure(figsize=(11, 0.5 + sum(0.5 * rows + 0.45 for rows in heights)))
    grid = figure.add_gridspec(len(layers), 2, width_ratios=[1, 6], height_ratios=[r + 0.45 for r in heights])
    image_axis = figure.add_subplot(grid[:, 0])
    image_axis.imshow(_rgb(maps.image), interpolation="nearest")
    image_axis.set_title(Path(str(maps.source)).name, fontsize=9)
    image_axis.set_axis_off()
    for row, (name, stack) in enumerate(layers):
        chosen = stack[:per_layer]
        peaks = chosen.reshape(len(chosen), -1).max(1)
        scaled = chosen / np.where(peaks > 0, peaks, 1)[:, None, None]
        tiles = np.repeat(np.clip(scaled, 0, 1)[..., None], 3, -1)
        axis = figure.add_subplot(grid[row, 1])
        axis.imshow(_mosaic(tiles, min(columns, len(tiles))), interpolation="nearest")
        axis.set_title(f"{name}: {len(chosen)} of {len(stack)} maps ({stack.shape[1]}x{stack.shape[2]}), "
                       f"largest mean first", fontsize=9, loc="left")
        axis.set_axis_off()
    return figure


def top_patches_figure(result: TopPatches, *, filters: Sequence[int] | None = None, class_names=None,
                       columns: int = 4) -> Figure:
    """Per filter, its top patches in a square block, strongest at the top left (Zeiler and Fergus'
    Figure 2); for conv1, each filter's kernel beside its block (the paper's Figure 3)."""
    chosen = list(filters) if filters is not None else list(range(min(16, len(result.values))))
    top = result.patches.shape[1]
    side = int(np.ceil(np.sqrt(top)))
    with_kernels = result.kernels is not None
    pairs = 2 if with_kernels else 1
    rows = -(-len(chosen) // columns)
    figure, axes = plt.subplots(rows, columns * pairs, figsize=(2.3 * columns * (1.4 if with_kernels else 1),
                                                                 2.5 * rows + 0.6), squeeze=False,
                                gridspec_kw={"width_ratios": [0.4, 1] * columns if with_kernels else None})
    for axis in axes.flat:
        axis.set_axis_off()
    for position, filter_index in enumerate(chosen):
        row, column = divmod(position, columns)
        block = _mosaic(np.stack([_rgb(patch) for patch in result.patches[filter_index]]), side)
        axis = axes[row, column * pairs + pairs - 1]
        axis.imshow(block, interpolation="nearest")
        label = f"filter {filter_index}: {result.values[filter_index, 0]:.2f}"
        if class_names is not None:
            names = [class_names[int(label_index)] for label_index in result.labels[filter_index]]
            label += f"\n{max(set(names), key=names.count)} ({names.count(max(set(names), key=names.count))}/{top})"
        axis.set_title(label, fontsize=8)
        if with_kernels:
            kernel = result.kernels[filter_index].transpose(1, 2, 0)
            kernel = (kernel - kernel.min()) / max(float(kernel.max() - kernel.min()), 1e-12)
            axes[row, column * pairs].imshow(_rgb(kernel) if kernel.shape[-1] in (1, 3) else kernel.mean(-1),
                                             interpolation="nearest")
            axes[row, column * pairs].set_title("kernel", fontsize=8)
    figure.suptitle(f"{result.layer}: the {top} strongest of {result.images_seen:,} images per filter, "
                    f"receptive field {result.field.size}x{result.field.size} px", fontsize=10)
    figure.tight_layout()
    return figure


def attribution_grid(images: np.ndarray, maps: np.ndarray, titles: Sequence[str], method: str, *,
                     columns: int = 6) -> Figure:
    """Images (N, H, W, C) 0..1, each above its overlay with ``maps`` (N, H, W), with a title (the
    report's grids of Grad-CAM on mistakes and on one image per class)."""
    rows = -(-len(images) // columns)
    figure, axes = plt.subplots(2 * rows, columns, figsize=(1.8 * columns, 3.7 * rows + 0.2), squeeze=False)
    for axis in axes.flat:
        axis.set_axis_off()
    for position, (image, attribution, title) in enumerate(zip(images, maps, titles)):
        row, column = divmod(position, columns)
        axes[2 * row, column].imshow(_rgb(image), interpolation="nearest")
        axes[2 * row, column].set_title(title, fontsize=7)
        axes[2 * row + 1, column].imshow(overlay(image, attribution, method), interpolation="nearest")
    figure.tight_layout()
    return figure
