"""Building blocks the AlexNet family is made of, each switchable the way the paper argues."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Activation = Literal["relu", "tanh"]
Normalization = Literal["lrn", "batch", "none"]
Pooling = Literal["overlapping", "non-overlapping"]

ACTIVATIONS: tuple[str, ...] = ("relu", "tanh")
NORMALIZATIONS: tuple[str, ...] = ("lrn", "batch", "none")
POOLINGS: tuple[str, ...] = ("overlapping", "non-overlapping")

# Section 3.4: pooling units spaced s=2 apart summarising z x z neighbourhoods; z=3 overlaps,
# z=2 is the traditional non-overlapping scheme the paper compares against (0.4% top-1).
POOL_KERNEL = {"overlapping": 3, "non-overlapping": 2}
POOL_STRIDE = 2


class LocalResponseNorm(nn.Module):
    """Local response normalisation across channels, exactly as Section 3.3 of the paper defines it.

    b[i] = a[i] / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a[j]^2) ** beta

    with k=2, n=5, alpha=1e-4, beta=0.75. ``torch.nn.LocalResponseNorm`` divides ``alpha`` by ``n``
    (it averages the squares instead of summing them), so the paper's layer is torch's with
    ``alpha * n``; passing 1e-4 straight to torch's layer gives a normalisation 5x too weak.

    With ``groups=2`` each tower is normalised on its own: in the paper the two halves of a layer
    live on different GPUs, so a kernel's neighbours are only those of its own tower.
    """

    def __init__(
        self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0, groups: int = 1
    ) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k, self.groups = size, alpha, beta, k, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The squares are summed in fp32 even under bf16 autocast: alpha * sum(a^2) is a small
        # correction to k=2 that bf16's 8-bit mantissa would round away.
        dtype = x.dtype
        x = x.float()
        if self.groups == 1:
            y = F.local_response_norm(x, self.size, self.alpha * self.size, self.beta, self.k)
        else:
            batch, channels, height, width = x.shape
            towers = x.reshape(batch * self.groups, channels // self.groups, height, width)
            y = F.local_response_norm(towers, self.size, self.alpha * self.size, self.beta, self.k)
            y = y.reshape(batch, channels, height, width)
        return y.to(dtype)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, groups={self.groups}"


def make_activation(name: str) -> nn.Module:
    """ReLU (the paper's choice, Section 3.1) or tanh (the saturating unit it replaced)."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}")


def make_pool(pooling: str, padding: int = 0) -> nn.MaxPool2d:
    """Max pooling with stride 2, overlapping (3x3) or not (2x2), as compared in Section 3.4."""
    if pooling not in POOL_KERNEL:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
    kernel = POOL_KERNEL[pooling]
    return nn.MaxPool2d(kernel_size=kernel, stride=POOL_STRIDE, padding=min(padding, kernel // 2))
