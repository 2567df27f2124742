"""Checkpoints that survive a crash mid-write and load without executing anything."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import AlexNetError


def atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it over ``path``:
    a reader (or a resumed run) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda file: torch.save(state, file))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only."""
    if not path.is_file():
        raise AlexNetError(f"no checkpoint at {path}; is this a run folder written by `alexnet train`?")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated, corrupt, or not a checkpoint at all
        raise AlexNetError(
            f"checkpoint {path} cannot be read ({type(error).__name__}: {str(error)[:200]}); it may "
            f"be truncated or corrupt. If the run folder has another checkpoint (best.pt), copy it "
            f"to {path.name} and resume again."
        ) from None


def rng_state() -> dict:
    """Every random-number state a training step draws from."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_tensors(),
        "python": torch.tensor(list(random.getstate()[1]), dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys, position = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), int(position)))
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state_to_tensors() -> tuple[torch.Tensor, int]:
    _, keys, position, *_ = np.random.get_state()
    return torch.from_numpy(keys.astype(np.int64)), int(position)
