"""A picture of what augmentation does to real images: one row per image, one column per operation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch
from torchvision.transforms import v2

from ..errors import AlexNetError
from ..runs import check_output, save_figure
from .augment import augment_batch, compute_pca, epoch_generator
from .augment_spec import AugmentConfig, resolve_augment
from .catalog import dataset_info
from .datasets import load_tensors, locate
from .images import decode, decode_problem
from .packed import PackedIndex, from_stored, is_packed, stored_images
from .streaming import index_folder

# Each operation alone, at a strength where its effect is visible, then the presets combined.
PREVIEW_SPECS: tuple[str, ...] = (
    "shift=4", "crop=224/256", "resized-crop=0.35-1", "hflip", "vflip", "rotate=15", "translate=0.1",
    "scale=0.7-1.3", "jitter=0.4", "hue=0.25", "pca=0.1", "noise=0.05", "erase=1", "light", "paper", "tutorial",
)
PREVIEW_SIZE = 128  # streamed images and your own are shown at 128x128 (shorter side resized, centre cut)


def _fit(image: torch.Tensor) -> torch.Tensor:
    return v2.Compose([v2.Resize(PREVIEW_SIZE, antialias=True), v2.CenterCrop(PREVIEW_SIZE)])(image)


def _samples(dataset: str, data_dir, count: int) -> tuple[torch.Tensor, list[str], object]:
    """``count`` training images of different classes (uint8), their class names, and the colour PCA."""
    info = dataset_info(dataset)
    if info.in_memory:
        data = load_tensors(dataset, "train", data_dir=data_dir)
        firsts = [int(torch.nonzero(data.labels == label)[0]) for label in data.labels.unique()[:count].tolist()]
        index = torch.tensor(firsts)
        return data.images[index], [data.classes[i] for i in data.labels[index].tolist()], data.pca
    if data_dir and is_packed(Path(data_dir).expanduser()):  # shards `alexnet data pack` wrote (no class folders)
        index = PackedIndex.read(Path(data_dir).expanduser())
        images, names = _first_of_each_class(stored_images(index, "train"), from_stored, index.classes, count)
        return images, names, index.pca or compute_pca(images)  # the training images' PCA, stored when packed
    root = locate(dataset, data_dir)
    if root is None:
        raise AlexNetError(f"no {dataset} data found in {data_dir}" if data_dir else
                           f"no {dataset} data found (give --data-dir)")
    samples, classes = index_folder(root / "train" if (root / "train").is_dir() else root)
    images, names = _first_of_each_class(samples, decode, classes, count)
    return images, names, compute_pca(images)


def _first_of_each_class(items, read, classes: list[str], count: int) -> tuple[torch.Tensor, list[str]]:
    """The first readable image of each class in ``items`` ((source, label), ``read(source)`` an image),
    ``count`` at most, at ``PREVIEW_SIZE``; and their class names."""
    images, names, seen = [], [], set()
    for source, label in items:
        if label in seen:
            continue
        try:
            images.append(_fit(read(source)))
        except Exception:  # an unreadable image: the next of its class stands in
            continue
        names.append(classes[label])
        seen.add(label)
        if len(images) == count:
            break
    if not images:
        raise AlexNetError("no readable training image found to preview")
    return torch.stack(images), names


def _own_images(paths: list[Path]) -> tuple[torch.Tensor, list[str], object]:
    """The user's image files as the rows: decoded as every image file is, at ``PREVIEW_SIZE``."""
    images = []
    for path in paths:
        try:
            images.append(_fit(decode(str(path))))
        except Exception as error:  # decode raises whatever its decoder raises; say which file and why
            raise AlexNetError(f"cannot read image {path} ({decode_problem(error)}); give a JPEG, PNG or other "
                               f"image file") from None
    images = torch.stack(images)
    return images, [path.name for path in paths], compute_pca(images)


def preview_columns(
    augment: AugmentConfig | str | None, dataset: str | None, extra: AugmentConfig | str | None = None,
) -> list[tuple[str, AugmentConfig]]:
    """(title, config) of every column: the original; then each operation of ``augment`` alone and
    all of them combined (without ``augment``: ``PREVIEW_SPECS``); then ``extra``, a run's own."""
    columns = [("original", AugmentConfig())]
    if augment is None:
        columns += [(spec, resolve_augment(spec, dataset)) for spec in PREVIEW_SPECS]
    else:
        config = resolve_augment(augment, dataset)
        operations = [] if config == AugmentConfig() else config.spec().split(",")
        columns += [(operation, resolve_augment(operation, dataset)) for operation in operations]
        if len(operations) > 1:
            columns.append(("combined", config))
    if extra is not None:
        name = extra if isinstance(extra, str) else extra.spec()
        columns.append((f"this run: {name}", resolve_augment(extra, dataset)))
    return columns


def augment_preview(
    dataset: str = "fashion-mnist", out: str | Path = "augment-preview.png", *, data_dir: str | Path | None = None,
    count: int = 6, seed: int = 0, augment: AugmentConfig | str | None = None,
    images: list[str | Path] | None = None, extra: AugmentConfig | str | None = None,
) -> Path:
    """Write a PNG grid of images under augmentation, one column per operation; returns its path.

    ``augment`` (a spec such as ``paper,noise=0.02``, or a config): each of its operations alone,
    then all combined; without it, every operation and the presets. The rows are ``count`` training
    images of ``dataset``, one per class, or the files ``images`` (shorter side resized to 128 and
    the centre cut square; ``dataset`` then only says whose rules apply, as mnist's presets mirror
    nothing). ``extra`` (a spec or config) adds a last column, e.g. the run's own. ``out`` must name
    an image file (its suffix gives the format); its folder is made if missing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = _check_request(count, Path(out), images)
    columns = preview_columns(augment, dataset, extra)  # a bad spec is refused before any image is read
    if images:
        paths = [Path(path) for path in images]
        for path in paths:
            if not path.is_file():
                raise AlexNetError(f"--image {path}: {'is a folder' if path.is_dir() else 'no such file'}; "
                                   f"give an image file")
        shown_images, names, pca = _own_images(paths)
        source = "your images" if len(paths) > 1 else paths[0].name
    else:
        shown_images, names, pca = _samples(dataset, data_dir, count)
        source = dataset
    size = tuple(shown_images.shape[-2:])
    figsize = (1.25 * len(columns), 1.35 * len(shown_images) + 0.3)
    figure, axes = plt.subplots(len(shown_images), len(columns), figsize=figsize, squeeze=False)
    for column, (title, config) in enumerate(columns):
        generator = epoch_generator(seed, column, "cpu", "preview")
        shown = augment_batch(shown_images, config, train=column > 0, output_size=size, generator=generator, pca=pca)
        shown = shown.clamp(0, 1).permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
        for row in range(len(shown_images)):
            axis = axes[row, column]
            if shown.shape[-1] == 1:
                axis.imshow(shown[row, :, :, 0], cmap="gray", vmin=0, vmax=1)
            else:
                axis.imshow(shown[row])
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                grey = shown.shape[-1] == 1 and title.startswith("hue=")
                axis.set_title(_wrap(title) + ("\n(grey: no hue)" if grey else ""), fontsize=7)
            if column == 0:
                axis.set_ylabel(names[row][:24], fontsize=7)
    if augment is None:
        what = "each augmentation alone, then the presets"
    else:
        what = f"each operation of {augment if isinstance(augment, str) else augment.spec()} alone, then combined"
    title = f"{source}: {what} (seed {seed})"
    figure.suptitle("\n".join(textwrap.wrap(title, max(40, int(figsize[0] * 14)))), fontsize=9)
    figure.tight_layout()
    try:
        save_figure(figure, out, dpi=120)  # a full disk or a vanished folder: an AlexNetError, no empty file
    finally:
        plt.close(figure)
    return out


def _wrap(title: str, width: int = 20) -> str:
    """A long spec over several lines, broken after its commas, so that titles do not overlap."""
    lines = textwrap.wrap(title.replace(",", ", "), width, break_on_hyphens=False, break_long_words=False)
    return "\n".join(lines).replace(", ", ",")


def _check_request(count: int, out: Path, images=None) -> Path:
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
    return check_output(out, "--out", inputs=tuple(images or ()))
