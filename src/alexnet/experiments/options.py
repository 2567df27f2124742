"""What every arm of an experiment shares: the data, the network, the seeds, the budget, where it goes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import AlexNetError
from .claims import Claim


@dataclass(frozen=True)
class ExperimentOptions:
    """What every arm of an experiment shares; None means the claim's own budget."""

    dataset: str = "fashion-mnist"
    model: str | None = None  # None: the paper-faithful network for the data's size (default_model)
    seeds: int = 3  # seeds 0..N-1, the same for every arm: the differences are paired by seed
    epochs: int | None = None
    subset: float | None = None
    jobs: int | None = None  # arms trained at once; None: one per physical core, each with one thread
    out: str = "experiments"
    data_dir: str | None = None
    val_size: int | None = None  # images held out for validation; None: the dataset's default
    threshold: float = 0.25  # relu: the training error Figure 1 times (25%)
    precision: str = "auto"
    device: str = "auto"

    def resolved(self) -> "ExperimentOptions":
        """A copy naming its model (the data's paper-faithful network when none is given)."""
        return self if self.model else dataclasses.replace(self, model=default_model(self.dataset))

    def budget(self, claim: Claim) -> tuple[int, float]:
        """(epochs, subset): the ones given, else the claim's own (None only means "not given")."""
        return (claim.epochs if self.epochs is None else self.epochs,
                claim.subset if self.subset is None else self.subset)

    def check(self) -> None:
        if self.seeds < 1:
            raise AlexNetError(f"--seeds must be at least 1, got {self.seeds}")
        if self.jobs is not None and self.jobs < 1:
            raise AlexNetError(f"--jobs must be at least 1, got {self.jobs}")
        if self.epochs is not None and self.epochs < 1:
            raise AlexNetError(f"--epochs must be at least 1, got {self.epochs} (leave it out for the claim's own)")
        if self.subset is not None and not 0 < self.subset <= 1:
            raise AlexNetError(f"--subset must be a fraction in (0, 1], got {self.subset} (leave it out for the "
                               f"claim's own)")
        if not 0 < self.threshold < 1:
            raise AlexNetError(f"--threshold must be a training error in (0, 1), got {self.threshold}")


def default_model(dataset: str) -> str:
    """The paper-faithful network (LRN, two towers, dropout 0.5) sized for ``dataset``'s images:
    the small variants for 28x28 and 32x32 sets, the paper's own for the rest."""
    from ..data import dataset_info

    shape = dataset_info(dataset).input_shape
    if shape and shape[1:] == (28, 28):
        return "alexnet_small28"
    if shape and shape[1:] == (32, 32):
        return "alexnet_small32"
    return "alexnet_paper"

