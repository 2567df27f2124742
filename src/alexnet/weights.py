"""Trained weights as safetensors: tensors plus the metadata needed to use them (model, options,
class names, input size, normalisation). Loading never executes code from the file."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save
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
    carry the legacy ``augment``/``flip_test``/``ten_crop`` keys it is derived from instead.
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
    test_views: dict | None = None
    augment: str | None = None  # the training augmentation preset
    flip_test: bool = False
    ten_crop: bool = False
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
        return cls(**{**kept, "class_names": tuple(values["class_names"]), "input_size": tuple(values["input_size"]),
                      "mean": tuple(values["mean"]), "std": tuple(values["std"])})


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
        model.load_state_dict(load_file(str(path), device=device))
    except (SafetensorError, RuntimeError) as error:
        raise AlexNetError(f"weights in {path} do not fit model {metadata.model!r}: {error}") from None
    return model.to(device).eval(), metadata
