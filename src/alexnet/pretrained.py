"""Published ImageNet weights brought into our format: torchvision's AlexNet as ``alexnet_owt``.

    >>> from alexnet.pretrained import import_torchvision
    >>> path = import_torchvision(download=True)          # or file="alexnet-owt-7be5be79.pth"
    >>> from alexnet.predict import predict
    >>> predict(path, ["cat.jpg"])

Everything written into the file's metadata (classes, crop, mean/std, accuracy) is read from
torchvision's own description of the weights (``AlexNet_Weights.IMAGENET1K_V1``), not copied here.
The published accuracy is written only for the published file itself (its SHA-256 checked): other
values under the same tensor names are imported without one.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import torch

from .errors import AlexNetError, reason
from .inference import TestViews
from .models import build_model
from .weights import WeightsMetadata, check_finite, save_weights

MODEL = "alexnet_owt"  # torchvision's single-tower AlexNet ("one weird trick"), tensor for tensor


def torchvision_weights():
    """torchvision's ``AlexNet_Weights.IMAGENET1K_V1``: URL, categories, preprocessing, published accuracy."""
    from torchvision.models import AlexNet_Weights

    return AlexNet_Weights.IMAGENET1K_V1


def hub_cache_file(weights=None) -> Path:
    """Where torchvision keeps the weights once downloaded: ``torch.hub.get_dir()/checkpoints/<file>``."""
    weights = weights or torchvision_weights()
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def import_torchvision(file: str | os.PathLike | None = None, *, download: bool = False,
                       out: str | os.PathLike = "imagenet-alexnet.safetensors") -> Path:
    """Write torchvision's ImageNet AlexNet weights as an ``alexnet_owt`` weights file with full metadata.

    The state dict comes from ``file`` when given, else from torch's hub cache when torchvision
    downloaded it before, else, with ``download``, through torchvision (``get_state_dict``, which
    checks the file's hash). Files are read with ``torch.load(weights_only=True)``: no code runs.
    Returns the path written.
    """
    weights = torchvision_weights()
    state, origin = _state_dict(weights, file, download)
    model = build_model(MODEL, num_classes=len(weights.meta["categories"]))
    check_fits(state, model.state_dict(), origin)
    check_finite(state, origin)
    model.load_state_dict(state)
    metadata = imagenet_metadata(weights)
    if origin != weights.url and not is_published_file(Path(origin), weights):
        # other values under the same names (fine-tuned, converted, damaged): torchvision's accuracy is not theirs
        metadata = replace(metadata, test_top1=None, test_top5=None, source=str(Path(origin).resolve()))
    return save_weights(out, model, metadata)


def published_hash(weights=None) -> str:
    """The start of the published file's SHA-256, from its name (``alexnet-owt-7be5be79.pth``), as
    ``torch.hub`` checks a download."""
    weights = weights or torchvision_weights()
    return torch.hub.HASH_REGEX.search(os.path.basename(urlparse(weights.url).path)).group(1)


def is_published_file(path: Path, weights=None) -> bool:
    """Whether ``path`` is the file torchvision publishes, byte for byte (its SHA-256 checked)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest().startswith(published_hash(weights))


def imagenet_metadata(weights=None) -> WeightsMetadata:
    """Our metadata for torchvision's weights: their categories, preprocessing and published accuracy."""
    weights = weights or torchvision_weights()
    preset = weights.transforms()  # ImageClassification: resize 256, centre crop 224, ImageNet mean/std
    crop, resized = preset.crop_size[0], preset.resize_size[0]
    metrics = weights.meta["_metrics"]["ImageNet-1K"]  # percentages on ImageNet-1K val, centre crop
    return WeightsMetadata(
        model=MODEL, model_options={}, class_names=tuple(weights.meta["categories"]), input_size=(3, crop, crop),
        mean=tuple(preset.mean), std=tuple(preset.std), dataset="imagenet", precision="fp32",
        test_views=TestViews(crop / resized, "centre").to_dict(),
        test_top1=metrics["acc@1"] / 100, test_top5=metrics["acc@5"] / 100, source=weights.url,
    )


def check_fits(state: dict, expected: dict, origin: str) -> None:
    """Raise ``AlexNetError`` naming the first tensor of ``state`` that does not fit ``expected``."""
    for name, tensor in expected.items():
        if name not in state:
            raise AlexNetError(f"{origin} is not torchvision's AlexNet: it has no tensor {name!r} "
                               f"(its first is {next(iter(state), None)!r})")
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise AlexNetError(f"{origin} is not torchvision's AlexNet: tensor {name!r} is "
                               f"{_shape(state[name])}, {MODEL} needs {_shape(tensor)}")
    extra = next((name for name in state if name not in expected), None)
    if extra is not None:
        raise AlexNetError(f"{origin} is not torchvision's AlexNet: it has a tensor {extra!r} that {MODEL} has not")


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(map(str, tensor.shape)) or "a scalar"


def _state_dict(weights, file, download: bool) -> tuple[dict, str]:
    """(state dict, where it came from): the file given, the hub cache, or a download."""
    if file is not None:
        return _load(Path(file)), str(file)
    cached = hub_cache_file(weights)
    if cached.is_file():
        return _load(cached), str(cached)
    if not download:
        raise AlexNetError(
            f"torchvision's AlexNet weights are not in torch's cache ({cached}); pass the file you have "
            f"(--file {cached.name}), or --download to fetch it from {weights.url} "
            f"({weights.meta['_file_size']:.0f} MB, needs internet)")
    try:
        state = weights.get_state_dict(progress=True, check_hash=True)  # saved to the cache, hash checked
    except (OSError, RuntimeError, ValueError) as error:  # URLError is an OSError; a bad hash a RuntimeError
        raise AlexNetError(f"could not download {weights.url} ({error}); download it by other means and "
                           f"pass it with --file") from None
    return state, weights.url


def _load(path: Path) -> dict:
    """A state dict file, read without running code from it (.pth or .safetensors)."""
    if not path.is_file():
        raise AlexNetError(f"{path} is a folder; pass the weights file (.pth or .safetensors)" if path.is_dir()
                           else f"no file at {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors, zip errors, a weights_only refusal, a damaged file
        with open(path, "rb") as file:
            start = file.read(4)
        if path.suffix != ".safetensors" and not start.startswith((b"PK\x03\x04", b"\x80")):  # zip, pickle
            raise AlexNetError(f"{path} is not a PyTorch weights file (torch.save writes a zip archive or a "
                               f"pickle); pass the .pth file torchvision downloads") from None
        raise AlexNetError(f"{path} is not a readable PyTorch weights file ({reason(error)})") from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise AlexNetError(f"{path} does not hold a state dict (tensor names to tensors), as torchvision's "
                           f"{hub_cache_file().name} does")
    return state
