"""Trained weights as safetensors: tensors plus the metadata needed to use them (model, options,
class names, input size, normalisation). Loading never executes code from the file."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import AlexNetError
from .models import build_model

FORMAT = "alexnet-weights/1"


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
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={key: json.dumps(value) for key, value in metadata.items()})
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
    except json.JSONDecodeError:
        metadata = {}
    if metadata.get("format") != FORMAT:
        raise AlexNetError(
            f"{path} has no alexnet metadata (model name, classes); it was not written by "
            f"`alexnet train`. Load plain state dicts with build_model(...).load_state_dict(...)."
        )
    return metadata


def load_weights(path: str | Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model a weights file describes and load its tensors; returns (model, metadata)."""
    metadata = read_metadata(path)
    options = dict(metadata["model_options"])
    options["num_classes"] = metadata["num_classes"]
    options.setdefault("in_chans", metadata["input_size"][0])
    model = build_model(metadata["model"], **options)
    try:
        model.load_state_dict(load_file(str(path), device=device))
    except (SafetensorError, RuntimeError) as error:
        raise AlexNetError(f"weights in {path} do not fit model {metadata['model']!r}: {error}") from None
    return model.to(device).eval(), metadata
