"""The figures of a run, each a function from plain numbers and arrays to a matplotlib ``Figure``.

None of them reads files or runs a model: ``html.py`` and ``predictions.py`` gather the data, so
every figure can also be drawn from numbers computed elsewhere (a notebook, another run).
Images are float arrays in 0..1 shaped (N, H, W, C) with C = 1 (drawn grey) or 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

CORRECT_COLOUR, WRONG_COLOUR = "#1a7f37", "#cf222e"
FILTER_GRID_COLOUR = (0.55, 0.75, 0.95)  # between kernels: a colour no grey kernel contains
TRAIN_STYLE, VAL_STYLE = dict(linestyle="--", marker="o"), dict(linestyle="-", marker="s")
# Above this many classes a confusion matrix has no room for numbers in its cells.
ANNOTATED_CLASSES = 20


def save_figure(figure: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``figure`` as a PNG and release its memory; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)  # laid out when drawn; bbox_inches="tight" would render twice
    plt.close(figure)
    return path


# --- training ---------------------------------------------------------------------------------


def training_curves(history: Sequence[dict], title: str = "") -> Figure:
    """Loss and top-1 accuracy per epoch, train and validation, and the learning rate.

    ``history`` is the rows of ``metrics.jsonl`` (``epoch``, ``train_loss``, ``val_loss``,
    ``train_top1``, ``val_top1``, ``lr``). The loss axis follows the data (no fixed 0..1 range: a
    cross-entropy starts at ln(classes), 2.3 for ten).
    """
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, top1_axis, lr_axis) = plt.subplots(
        1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1, 1, 0.7]})
    loss_axis.plot(epochs, [row["train_loss"] for row in history], label="train", **TRAIN_STYLE)
    loss_axis.plot(epochs, [row["val_loss"] for row in history], label="validation", **VAL_STYLE)
    loss_axis.set(title="cross-entropy loss", xlabel="epoch", ylabel="loss")
    top1_axis.plot(epochs, [100 * row["train_top1"] for row in history], label="train", **TRAIN_STYLE)
    top1_axis.plot(epochs, [100 * row["val_top1"] for row in history], label="validation", **VAL_STYLE)
    top1_axis.set(title="top-1 accuracy", xlabel="epoch", ylabel="%")
    rates = [row["lr"] for row in history]
    lr_axis.plot(epochs, rates, color="tab:gray", marker=".")
    lr_axis.set(title="learning rate (end of epoch)", xlabel="epoch", ylabel="lr")
    if min(rates) > 0 and max(rates) / min(rates) > 20:  # one-cycle and cosine schedules span decades
        lr_axis.set_yscale("log")
    for axis in (loss_axis, top1_axis, lr_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)
    loss_axis.legend()
    top1_axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def comparison_curves(histories: dict[str, Sequence[dict]]) -> Figure:
    """Validation (solid) and training (dashed) loss and top-1 of several runs on shared axes."""
    figure, (loss_axis, top1_axis) = plt.subplots(1, 2, figsize=(13, 4))
    for index, (name, history) in enumerate(histories.items()):
        colour = f"C{index % 10}"
        epochs = [row["epoch"] for row in history]
        for key, axis, scale in (("loss", loss_axis, 1), ("top1", top1_axis, 100)):
            axis.plot(epochs, [scale * row[f"val_{key}"] for row in history], color=colour, marker="o",
                      label=f"{name} (val)")
            axis.plot(epochs, [scale * row[f"train_{key}"] for row in history], color=colour, linestyle="--",
                      alpha=0.6, label=f"{name} (train)")
    loss_axis.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    top1_axis.set(title="top-1 accuracy", xlabel="epoch", ylabel="%")
    for axis in (loss_axis, top1_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)
    top1_axis.legend(fontsize=8, loc="best")
    figure.tight_layout()
    return figure


# --- scores -----------------------------------------------------------------------------------


def confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> Figure:
    """Heatmap of the row-normalised rates (each true class sums to 100%), with counts and rates."""
    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(1, keepdims=True)
    rates = counts / np.maximum(totals, 1)
    classes = len(class_names)
    side = max(5.0, 0.6 * classes + 1.5) if classes <= ANNOTATED_CLASSES else 12.0
    figure, axis = plt.subplots(figsize=(side + 2, side), layout="constrained")  # room for the colour bar
    image = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.02, label="share of the true class")
    if classes <= ANNOTATED_CLASSES:
        ticks = np.arange(classes)
        axis.set_xticks(ticks, class_names, rotation=45, ha="right")
        axis.set_yticks(ticks, class_names)
        for row in range(classes):
            for column in range(classes):
                if counts[row, column] == 0:
                    continue
                colour = "white" if rates[row, column] > 0.5 else "black"
                axis.text(column, row, f"{counts[row, column]}\n{rates[row, column]:.0%}", ha="center",
                          va="center", fontsize=7, color=colour)
    axis.set(xlabel="predicted class", ylabel="true class",
             title=f"confusion matrix ({int(counts.sum())} images; count and share of each row)")
    return figure


def per_class_scores(precision: Sequence[float], recall: Sequence[float], f1: Sequence[float],
                     class_names: Sequence[str]) -> Figure:
    """Grouped bars of precision, recall and F1 for every class."""
    classes = len(class_names)
    positions = np.arange(classes)
    width = 0.27
    figure, axis = plt.subplots(figsize=(max(8.0, 0.7 * classes + 2), 4))
    for offset, (name, values) in zip((-width, 0, width), (("precision", precision), ("recall", recall),
                                                           ("F1", f1))):
        axis.bar(positions + offset, 100 * np.asarray(values), width, label=name)
    axis.set_xticks(positions, class_names, rotation=45 if classes > 5 else 0, ha="right" if classes > 5 else "center")
    axis.set(ylabel="%", ylim=(0, 118), yticks=range(0, 101, 20), title="per-class precision, recall and F1 (test set)")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(ncols=3, loc="upper center")  # above the 100% line: never over a bar
    figure.tight_layout()
    return figure


# --- images -----------------------------------------------------------------------------------


def _show(axis, image: np.ndarray) -> None:
    if image.shape[-1] == 1:
        axis.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        axis.imshow(np.clip(image, 0, 1), interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])


def _grid_layout(figure: Figure, title: str, fontsize: int) -> None:
    """Fixed margins for a grid of small images with two-line titles (tight_layout measures every
    axis and takes seconds for 40 of them): the figure's title in the top 0.35 inch, then the first
    row's titles."""
    height = figure.get_figheight()
    figure.suptitle(title, fontsize=fontsize, y=1 - 0.08 / height, va="top")
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.1 / height, top=1 - 0.75 / height,
                           wspace=0.08, hspace=0.42)  # hspace: of an image row, room for its title


def prediction_grid(images: np.ndarray, labels: Sequence[int], predictions: Sequence[int],
                    probabilities: Sequence[float], class_names: Sequence[str], *, columns: int = 8,
                    title: str = "test images: true / predicted (top-1 probability)") -> Figure:
    """Images with their true and predicted class and the predicted class's probability; wrong
    predictions in red."""
    count = len(images)
    rows = max(1, -(-count // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.95 * rows + 0.4), squeeze=False)
    for index, axis in enumerate(axes.flat):
        if index >= count:
            axis.axis("off")
            continue
        _show(axis, images[index])
        true, predicted = int(labels[index]), int(predictions[index])
        axis.set_title(f"{class_names[true]}\n→ {class_names[predicted]} ({probabilities[index]:.0%})", fontsize=7,
                       color=CORRECT_COLOUR if true == predicted else WRONG_COLOUR)
    _grid_layout(figure, title, fontsize=10)
    return figure


def confident_mistakes(images: np.ndarray, labels: Sequence[int], probabilities: np.ndarray,
                       class_names: Sequence[str], *, count: int = 24, columns: int = 8) -> Figure:
    """The ``count`` wrong predictions made with the highest probability (``probabilities``: (N, classes))."""
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels)
    predictions = probabilities.argmax(1)
    confidence = probabilities.max(1)
    wrong = np.flatnonzero(predictions != labels)
    chosen = wrong[np.argsort(-confidence[wrong], kind="stable")[:count]]
    return prediction_grid(images[chosen], labels[chosen], predictions[chosen], confidence[chosen], class_names,
                           columns=columns,
                           title=f"the {len(chosen)} most confident mistakes of {len(wrong)} "
                                 f"(true → predicted, probability)")


def first_layer_filters(weights: np.ndarray, towers: int = 1, *, columns: int | None = None) -> Figure:
    """The first convolution's kernels (out, in, k, k) as an image grid, as in the paper's Figure 3.

    Each kernel is scaled to fill 0..1 on its own (their ranges differ by orders of magnitude).
    One-channel kernels are drawn grey, three-channel ones as RGB; with two towers the kernels split
    in halves (the paper's two GPUs) and each tower is its own block of rows.
    """
    weights = np.asarray(weights, dtype=np.float64)
    out_channels, in_channels = weights.shape[:2]
    low = weights.min(axis=(1, 2, 3), keepdims=True)
    high = weights.max(axis=(1, 2, 3), keepdims=True)
    scaled = (weights - low) / np.maximum(high - low, 1e-12)
    kernels = scaled.transpose(0, 2, 3, 1)  # (out, k, k, in)
    if in_channels not in (1, 3):  # e.g. a model built for other inputs: show the channel mean
        kernels = kernels.mean(-1, keepdims=True)
    channels = "grey" if kernels.shape[-1] == 1 else "RGB"
    kernels = np.broadcast_to(kernels, (*kernels.shape[:3], 3))  # grey kernels drawn as equal R, G, B
    per_tower = out_channels // towers
    columns = columns or (8 if per_tower <= 32 else 16)
    rows_per_tower = -(-per_tower // columns)
    side = kernels.shape[1]
    figure, axes = plt.subplots(towers, 1, figsize=(0.6 * columns + 0.8, 0.6 * rows_per_tower * towers + 0.9),
                                squeeze=False)
    for tower in range(towers):
        block = kernels[tower * per_tower : (tower + 1) * per_tower]
        # a coloured 1-pixel grid between kernels, so white and black kernel pixels stay visible
        mosaic = np.empty((rows_per_tower * (side + 1) + 1, columns * (side + 1) + 1, 3))
        mosaic[:] = FILTER_GRID_COLOUR
        for index, kernel in enumerate(block):
            row, column = divmod(index, columns)
            top, left = 1 + row * (side + 1), 1 + column * (side + 1)
            mosaic[top : top + side, left : left + side] = kernel
        axis = axes[tower, 0]
        _show(axis, mosaic)
        if towers > 1:
            axis.set_ylabel(f"tower {tower + 1}", fontsize=9)
    figure.suptitle(f"first-layer filters: {out_channels} kernels of {side}x{side}x{in_channels} ({channels}, "
                    f"each scaled to its own range)", fontsize=9)
    figure.tight_layout()
    return figure


def nearest_neighbours(query_images: np.ndarray, query_labels: Sequence[int], neighbour_images: np.ndarray,
                       neighbour_labels: np.ndarray, distances: np.ndarray, class_names: Sequence[str], *,
                       metric: str = "Euclidean", pool_size: int | None = None) -> Figure:
    """The paper's Figure 4 (right): each row a test image, then the training images nearest to it
    in feature space. ``neighbour_images``: (Q, K, H, W, C); ``neighbour_labels``, ``distances``: (Q, K)."""
    queries, neighbours = np.asarray(neighbour_labels).shape
    figure, axes = plt.subplots(queries, neighbours + 1, figsize=(1.45 * (neighbours + 1), 1.75 * queries + 0.4),
                                squeeze=False)
    for row in range(queries):
        axis = axes[row, 0]
        _show(axis, query_images[row])
        axis.set_title(f"test: {class_names[int(query_labels[row])]}", fontsize=7, fontweight="bold")
        for spine in axis.spines.values():
            spine.set(edgecolor="black", linewidth=2)
        for column in range(neighbours):
            axis = axes[row, column + 1]
            _show(axis, neighbour_images[row, column])
            label = int(neighbour_labels[row, column])
            same = label == int(query_labels[row])
            axis.set_title(f"{class_names[label]}\nd={distances[row, column]:.3g}", fontsize=6,
                           color=CORRECT_COLOUR if same else WRONG_COLOUR)
    pool = f" among {pool_size:,} training images" if pool_size else ""
    _grid_layout(figure, f"nearest training images by FC7 features ({metric} distance{pool})", fontsize=9)
    return figure


def learning_rate_range(rates: Sequence[float], losses: Sequence[float], smoothed: Sequence[float],
                        suggestion: float) -> Figure:
    """The learning-rate range test: each step's loss and its moving average against the rate (log
    scale), the suggested rate marked."""
    figure, axis = plt.subplots(figsize=(7, 4.2), layout="constrained")
    axis.plot(rates, losses, color="#bbbbbb", linewidth=0.8, label="loss of each step")
    axis.plot(rates, smoothed, color="#1f77b4", linewidth=2, label="smoothed")
    axis.axvline(suggestion, color="#d62728", linestyle="--", label=f"suggested: {suggestion:.3g}")
    axis.set_xscale("log")
    axis.set_xlabel("learning rate")
    axis.set_ylabel("training loss")
    top = max(smoothed[: max(1, len(smoothed) // 2)]) * 1.5  # the climb at the end would hide the fall
    axis.set_ylim(min(smoothed) * 0.9, max(top, min(smoothed) * 1.1))
    axis.set_title("Learning-rate range test")
    axis.legend()
    return figure
