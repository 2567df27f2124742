"""A picture of what each augmentation does to real samples: one row per image, one column per switch."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.transforms import v2

from ..errors import AlexNetError
from .augment import (
    PAPER_CROP_FRACTION, PRESETS, AugmentConfig, augment_batch, compute_pca, epoch_generator, resolve_augment,
)
from .datasets import dataset_info, load_tensors, locate
from .images import decode
from .streaming import index_folder

# Each augmentation alone, at a strength where its effect is visible, then the presets combined.
PREVIEW_COLUMNS: tuple[tuple[str, AugmentConfig], ...] = (
    ("original", AugmentConfig()),
    ("pad 4 + crop", AugmentConfig(crop_padding=4)),
    ("crop 224/256", AugmentConfig(crop_fraction=PAPER_CROP_FRACTION)),
    ("h-flip", AugmentConfig(horizontal_flip=True)),
    ("v-flip", AugmentConfig(vertical_flip=True)),
    ("rotate ±15°", AugmentConfig(rotation_degrees=15.0)),
    ("translate 10%", AugmentConfig(translate=0.1)),
    ("resized crop", AugmentConfig(random_resized_crop=(0.35, 1.0))),
    ("jitter 0.4", AugmentConfig(color_jitter=0.4)),
    ("PCA light σ=0.1", AugmentConfig(pca_lighting_std=0.1)),
    ("noise σ=0.05", AugmentConfig(gaussian_noise_std=0.05)),
    ("light", PRESETS["light"]),
    ("paper", PRESETS["paper"]),
    ("tutorial", PRESETS["tutorial"]),
)
PREVIEW_SIZE = 128  # streamed images are shown at 128x128


def _samples(dataset: str, data_dir, count: int) -> tuple[torch.Tensor, list[str], object]:
    """``count`` training images of different classes (uint8), their class names, and the colour PCA."""
    info = dataset_info(dataset)
    if info.in_memory:
        data = load_tensors(dataset, "train", data_dir=data_dir)
        firsts = [int(torch.nonzero(data.labels == label)[0]) for label in data.labels.unique()[:count].tolist()]
        index = torch.tensor(firsts)
        return data.images[index], [data.classes[i] for i in data.labels[index].tolist()], data.pca
    root = locate(dataset, data_dir)
    if root is None:
        raise AlexNetError(f"no {dataset} data found (give --data-dir)")
    samples, classes = index_folder(root / "train" if (root / "train").is_dir() else root)
    fit = v2.Compose([v2.Resize(PREVIEW_SIZE, antialias=True), v2.CenterCrop(PREVIEW_SIZE)])
    images, names, seen = [], [], set()
    for path, label in samples:
        if label in seen:
            continue
        try:
            images.append(fit(decode(path)))
        except Exception:
            continue
        names.append(classes[label])
        seen.add(label)
        if len(images) == count:
            break
    images = torch.stack(images)
    return images, names, compute_pca(images)


def augment_preview(
    dataset: str = "fashion-mnist", out: str | Path = "augment-preview.png", *, data_dir: str | Path | None = None,
    count: int = 6, seed: int = 0, extra: AugmentConfig | str | None = None,
) -> Path:
    """Write a PNG grid of ``count`` real training images under every augmentation; returns its path.

    ``extra`` (a config or preset name) adds a last column, e.g. the run's own recipe. ``out`` must
    name an image file (its suffix gives the format) in an existing folder.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = _check_request(count, Path(out))
    images, names, pca = _samples(dataset, data_dir, count)
    columns = list(PREVIEW_COLUMNS)
    if extra is not None:
        columns.append(("this run", resolve_augment(extra, dataset)))
    size = tuple(images.shape[-2:])
    figsize = (1.25 * len(columns), 1.35 * len(images))
    figure, axes = plt.subplots(len(images), len(columns), figsize=figsize, squeeze=False)
    for column, (title, config) in enumerate(columns):
        generator = epoch_generator(seed, column, "cpu", "preview")
        shown = augment_batch(images, config, train=column > 0, output_size=size, generator=generator, pca=pca)
        shown = shown.clamp(0, 1).permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
        for row in range(len(images)):
            axis = axes[row, column]
            if shown.shape[-1] == 1:
                axis.imshow(shown[row, :, :, 0], cmap="gray", vmin=0, vmax=1)
            else:
                axis.imshow(shown[row])
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title, fontsize=7)
            if column == 0:
                axis.set_ylabel(names[row], fontsize=7)
    figure.suptitle(f"{dataset}: each augmentation alone, then the presets combined (seed {seed})", fontsize=9)
    figure.tight_layout()
    try:
        figure.savefig(out, dpi=120)
    except OSError as error:  # the folder vanished or filled up while the images were drawn
        raise AlexNetError(f"cannot write {out} ({error.strerror or error}); choose another place") from None
    finally:
        plt.close(figure)
    return out


def _check_request(count: int, out: Path) -> Path:
    """Refuse what would fail only after the images were loaded and drawn."""
    from matplotlib.figure import Figure

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise AlexNetError(f"count must be a positive number of images (rows), got {count!r:.40}")
    # matplotlib also writes raw pixel buffers and LaTeX (raw, rgba, pgf): no picture to look at
    formats = sorted(set(Figure().canvas.get_supported_filetypes()) - {"raw", "rgba", "pgf"})
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in formats:
        given = f".{suffix}" if suffix else "no suffix"
        raise AlexNetError(f"{out}: {given} is not an image format; end the name in .png (or .{', .'.join(formats)})")
    if out.is_dir():
        raise AlexNetError(f"{out} is a folder; give a file name such as {out / 'augment-preview.png'}")
    if not out.parent.is_dir():
        problem = "is a file" if out.parent.exists() else "does not exist"
        raise AlexNetError(f"{out}: the folder {out.parent} {problem}; create the folder first or choose another")
    return out
