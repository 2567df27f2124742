"""Checkpoints that survive a crash mid-write and load without executing anything."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..errors import AlexNetError, reason
from ..runs import atomic_write

# What every checkpoint written by `alexnet train` holds; anything else is not one of ours.
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "history", "best_top1", "rng")


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda file: torch.save(state, file))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only."""
    if not path.is_file():
        raise AlexNetError(f"no checkpoint at {path}; is this a run folder written by `alexnet train`?")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated, corrupt, or not a checkpoint at all
        raise AlexNetError(
            f"checkpoint {path} cannot be read ({type(error).__name__}: {reason(error)}); it may "
            f"be truncated or corrupt. If the run folder has another checkpoint (best.pt), copy it "
            f"to {path.name} and resume again."
        ) from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise AlexNetError(
            f"{path} is a torch file but not a checkpoint of `alexnet train` (it lacks "
            f"{', '.join(missing[:4])}); pass the run folder that `alexnet train` printed"
        )
    return state


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
