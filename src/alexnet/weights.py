"""Trained weights as safetensors: tensors plus the metadata needed to use them (model, options,
class names, input size, normalisation). Loading never executes code from the file."""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save
import torch
from torch import nn

from .errors import AlexNetError
from .models import build_model
from .runs import atomic_write

FORMAT = "alexnet-weights/1"
_NUMBER = (int, float)
_TEXT_OR_NONE = (str, type(None))


@dataclass(frozen=True)
class WeightsMetadata:
    """What a weights file says about itself: enough to rebuild the model and use it as trained.

    The first block is required (the model cannot be rebuilt without it); the rest is what a run
    adds. ``test_views`` is ``inference.TestViews.to_dict()``; files written before it was stored
    carry the legacy ``augment``/``flip_test``/``ten_crop`` keys instead, which ``from_dict``
    translates into it (``LEGACY_KEYS``: read, never written).
    """

    model: str
    model_options: dict
    class_names: tuple[str, ...]
    input_size: tuple[int, int, int]  # (C, H, W) the model takes
    mean: tuple[float, ...]  # per channel of the training data, grey or RGB (0..1 scale)
    std: tuple[float, ...]
    dataset: str | None = None
    data_dir: str | None = None  # where the run found its data (a folder dataset's only home)
    val_size: int | None = None  # with seed: which training images were held out
    test_size: int | None = None  # a flat folder's test images held out apart from validation; None: none (test was val)
    test_files: str | None = None  # with test_size: data.files_digest of those test files
    seed: int = 0
    precision: str = "auto"  # what the run tested in; evaluate repeats it
    test_views: dict | None = None  # None: the centre of the whole image (crop fraction 1)
    epochs: int | None = None
    test_top1: float | None = None  # fraction of the test split, as trained or as published
    test_top5: float | None = None
    source: str | None = None  # where imported weights came from (their URL); None: trained here

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        return {"format": FORMAT, **values, "num_classes": self.num_classes, "class_names": list(self.class_names),
                "input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, values: dict, source: str | Path = "metadata") -> "WeightsMetadata":
        """Checked key by key: a damaged file is an ``AlexNetError`` naming the key, not a KeyError later."""
        problem = _metadata_problem(values)
        if problem:
            raise AlexNetError(f"{source} has damaged alexnet metadata ({problem}); train or export it again")
        known = {field.name for field in fields(cls)}
        kept = {key: value for key, value in values.items() if key in known}
        if kept.get("test_views") is None and any(key in values for key in LEGACY_KEYS):
            kept["test_views"] = _legacy_test_views(values, source)
        return cls(**{**kept, "class_names": tuple(values["class_names"]), "input_size": tuple(values["input_size"]),
                      "mean": tuple(values["mean"]), "std": tuple(values["std"])})


# The test views of files written before ``test_views`` was stored: the run's augmentation (whose
# centre crop the test took) and its ten-crop and mirrored-test switches.
LEGACY_KEYS = ("augment", "flip_test", "ten_crop")


def _legacy_test_views(values: dict, source: str | Path) -> dict:
    """``test_views`` of a file that carries the legacy keys instead (checked by ``_metadata_problem``)."""
    from .data import resolve_augment

    try:
        crop_fraction = resolve_augment(values.get("augment"), values.get("dataset")).crop_fraction
    except AlexNetError as error:
        raise AlexNetError(f"{source} has damaged alexnet metadata ({error}); train or export it again") from None
    views = "ten" if values.get("ten_crop") else "mirror" if values.get("flip_test") else "centre"
    return {"crop_fraction": crop_fraction, "views": views}


# Each key with the types its value may take (required, then optional).
REQUIRED = {
    "format": str, "model": str, "model_options": dict, "num_classes": int, "class_names": list,
    "input_size": list, "mean": list, "std": list,
}
OPTIONAL = {
    "dataset": _TEXT_OR_NONE, "augment": _TEXT_OR_NONE, "flip_test": bool, "ten_crop": bool,
    "epochs": (int, type(None)), "test_top1": (*_NUMBER, type(None)), "seed": int, "val_size": (int, type(None)),
    "test_size": (int, type(None)), "test_files": _TEXT_OR_NONE,
    "precision": str, "data_dir": _TEXT_OR_NONE, "test_views": (dict, type(None)),
    "test_top5": (*_NUMBER, type(None)), "source": _TEXT_OR_NONE,
}


def save_weights(path: str | Path, model: nn.Module, metadata: WeightsMetadata) -> Path:
    """Write ``model``'s weights and their ``metadata`` to ``path`` (.safetensors), atomically."""
    path = Path(path)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    data = save(state, metadata={key: json.dumps(value) for key, value in metadata.to_dict().items()})
    atomic_write(path, lambda file: file.write(data))  # a full disk leaves the previous file whole
    return path


def read_metadata(path: str | Path) -> WeightsMetadata:
    """The metadata of a weights file, checked; no tensor is read."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise AlexNetError(f"no weights file at {path}")
    problem = format_problem(path)
    if problem:
        raise AlexNetError(problem)
    try:
        with safe_open(str(path), framework="pt") as file:
            raw = file.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise AlexNetError(f"{path} is not a readable safetensors file ({error})") from None
    try:
        metadata = {key: json.loads(value) for key, value in raw.items()}
    except (json.JSONDecodeError, RecursionError):
        metadata = {}
    if metadata.get("format") != FORMAT:
        raise AlexNetError(
            f"{path} has no alexnet metadata (model name, classes); it was not written by "
            f"`alexnet train`. Load plain state dicts with build_model(...).load_state_dict(...)."
        )
    return WeightsMetadata.from_dict(metadata, path)


# What a file that is not safetensors is, from its first bytes: safetensors starts with the length of
# its JSON header (8 bytes, little-endian), then "{". Without this, safetensors calls a zip or pickle
# "header too large", which says nothing of what to do.
_IMPORT = "alexnet weights import torchvision --file FILE"


def format_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a safetensors weights file, naming what it is and what to pass instead;
    None when it looks like one (or cannot be read: the reader's own error says why)."""
    try:
        with open(path, "rb") as file:
            head = file.read(9)
    except OSError:
        return None
    if len(head) == 9 and head[8:9] == b"{":
        return None
    expected = "alexnet reads weights from .safetensors files (a run's model.safetensors, or one `weights import` wrote)"
    export = _exported_kind(path) if head.startswith(b"PK\x03\x04") else None
    if export:  # TorchScript and torch.export files are zips as torch.save's are
        return (f"{path} is a {export} export, not safetensors: {expected}. Pass the weights it was exported "
                f"from; the export itself runs without alexnet ({_export_loader(export)})")
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):  # torch.save: a zip, or a pickle (legacy)
        return (f"{path} is a PyTorch file (torch.save), not safetensors: {expected}. A checkpoint "
                f"(checkpoints/last.pt) belongs to its run folder: pass the folder. torchvision's AlexNet (.pth): "
                f"convert it with `{_IMPORT}`")
    if head[:1] == b"\x08":  # protobuf field 1 (ir_version) first: an ONNX model
        return (f"{path} looks like an ONNX model (an export), not safetensors: {expected}. Pass the weights it "
                f"was exported from")
    return f"{path} is not a safetensors weights file: {expected}; for torchvision's AlexNet use `{_IMPORT}`"


def _exported_kind(path: str | Path) -> str | None:
    """"TorchScript" or "torch.export" for a zip file that is one (by the members each writes), else None."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.split("/", 2)[1] for name in archive.namelist() if name.count("/")}
    except (OSError, zipfile.BadZipFile):
        return None
    if {"code", "constants.pkl"} & members:
        return "TorchScript"
    if "archive_format" in members:
        return "torch.export"
    return None


def _export_loader(kind: str) -> str:
    return "torch.jit.load(FILE)" if kind == "TorchScript" else "torch.export.load(FILE).module()"


def _metadata_problem(metadata: dict) -> str | None:
    """What is wrong with a weights file's metadata, or None: every key the loaders read, typed."""
    for key, kinds in {**REQUIRED, **OPTIONAL}.items():
        if key not in metadata:
            if key in REQUIRED:
                return f"no {key!r}"
            continue
        value = metadata[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _tuple(kinds)):
            return f"{key!r} is a {type(value).__name__}"
    names, size = metadata["class_names"], metadata["input_size"]
    if metadata["num_classes"] < 1 or len(names) != metadata["num_classes"] or not all(isinstance(n, str) for n in names):
        return f"'class_names' should be {metadata['num_classes']} names"
    if len(size) != 3 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size):
        return "'input_size' should be three positive integers"
    # per channel of the data the model was trained on, grey or RGB, whatever the model's own
    # channels (augment.normalize converts grey <-> RGB after normalising)
    for key in ("mean", "std"):
        values = metadata[key]
        if len(values) not in (1, 3) or not all(isinstance(v, _NUMBER) and math.isfinite(v) for v in values):
            return f"{key!r} should be 1 or 3 numbers (grey or RGB)"
    if len(metadata["mean"]) != len(metadata["std"]):
        return "'mean' and 'std' should have as many numbers"
    if not all(v > 0 for v in metadata["std"]):
        return "'std' should be positive"
    return None


def _tuple(kinds) -> tuple:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def load_weights(path: str | Path, device: str = "cpu") -> tuple[nn.Module, WeightsMetadata]:
    """Rebuild the model a weights file describes and load its tensors; returns (model, metadata)."""
    metadata = read_metadata(path)
    options = dict(metadata.model_options)
    options["num_classes"] = metadata.num_classes
    options.setdefault("in_chans", metadata.input_size[0])
    model = build_model(metadata.model, **options)  # options it does not take: AlexNetError
    try:
        state = load_file(str(path), device=device)
        check_finite(state, path)
        model.load_state_dict(state)
    except (SafetensorError, RuntimeError) as error:
        raise AlexNetError(f"weights in {path} do not fit model {metadata.model!r}: {error}") from None
    return model.to(device).eval(), metadata


def check_finite(state: dict, origin: str | Path) -> None:
    """Refuse weights holding NaN or infinity, naming the first such tensor: a network with one
    computes NaN for every image, and its "predictions" would be read as if they meant something."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            count = int((~torch.isfinite(tensor)).sum())
            raise AlexNetError(f"{origin}: tensor {name!r} holds {count:,} NaN or infinite value"
                               f"{'s' * (count != 1)} of {tensor.numel():,}; these weights are damaged (a "
                               f"diverged training run?). Use another copy, or an earlier checkpoint")
