"""Trained weights as safetensors: tensors plus the metadata needed to use them (model, options,
class names, input size, normalisation). Loading never executes code from the file."""

from __future__ import annotations

import json
import math
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from .errors import AlexNetError
from .models import build_model
from .runs import atomic_write

FORMAT = "alexnet-weights/1"
_NUMBER = (int, float)
# The metadata a weights file carries, each key with the types its value may take; the first
# block is required (the model cannot be rebuilt without it), the second is what a run adds.
REQUIRED = {
    "format": str, "model": str, "model_options": dict, "num_classes": int, "class_names": list,
    "input_size": list, "mean": list, "std": list,
}
OPTIONAL = {
    "dataset": (str, type(None)), "augment": (str, type(None)), "flip_test": bool, "ten_crop": bool,
    "epochs": int, "test_top1": _NUMBER, "seed": int, "val_size": (int, type(None)), "precision": str,
    "data_dir": (str, type(None)),
}


def save_weights(path: str | Path, model: nn.Module, *, model_name: str, model_options: dict,
                 class_names: list[str], mean: list[float], std: list[float], **extra) -> Path:
    """Write ``model``'s weights and the metadata to rebuild it to ``path`` (.safetensors)."""
    path = Path(path)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "model": model_name,
        "model_options": model_options,
        "num_classes": len(class_names),
        "class_names": class_names,
        "input_size": list(model.input_size),
        "mean": list(mean),
        "std": list(std),
        **extra,
    }
    data = save(state, metadata={key: json.dumps(value) for key, value in metadata.items()})
    atomic_write(path, lambda file: file.write(data))  # a full disk leaves the previous file whole
    return path


def read_metadata(path: str | Path) -> dict:
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
    problem = _metadata_problem(metadata)
    if problem:
        raise AlexNetError(f"{path} has damaged alexnet metadata ({problem}); train or export it again")
    return metadata


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
    for key in ("mean", "std"):
        values = metadata[key]
        if len(values) != size[0] or not all(isinstance(v, _NUMBER) and math.isfinite(v) for v in values):
            return f"{key!r} should be {size[0]} numbers"
    if not all(v > 0 for v in metadata["std"]):
        return "'std' should be positive"
    return None


def _tuple(kinds) -> tuple:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def load_weights(path: str | Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model a weights file describes and load its tensors; returns (model, metadata)."""
    metadata = read_metadata(path)
    options = dict(metadata["model_options"])
    options["num_classes"] = metadata["num_classes"]
    options.setdefault("in_chans", metadata["input_size"][0])
    model = build_model(metadata["model"], **options)  # options it does not take: AlexNetError
    try:
        model.load_state_dict(load_file(str(path), device=device))
    except (SafetensorError, RuntimeError) as error:
        raise AlexNetError(f"weights in {path} do not fit model {metadata['model']!r}: {error}") from None
    return model.to(device).eval(), metadata
