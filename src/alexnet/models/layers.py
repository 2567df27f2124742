"""Building blocks the AlexNet family is made of, each switchable the way the paper argues."""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import nn

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

    The window sum over channels is one matrix multiply with a banded (block-diagonal for towers)
    C x C matrix of ones, and the backward pass is written by hand; together with reusing buffers
    this is 4-7x faster forward and backward than ``F.local_response_norm`` (which pads, runs a 3-D
    average pool and lets autograd differentiate ``pow``) on 2 CPU cores for a (32, 96, 55, 55)
    input in either memory format; ``benchmarks/`` and ``alexnet.perf`` say how it was measured.
    bf16 input is computed in bf16 (``_compute_dtype`` says why), 2.3-4x faster again than in fp32
    on a CPU with AMX, within bf16's own precision: about 1% of each output at worst.

    Exporting (``torch.jit.trace``, ``torch.export``, ``torch.onnx.export``) sees plain operators
    instead, which every format can store and reload without this package: ``lrn_reference``, and
    for ONNX the standard ``LRN`` operator (one per tower), whose alpha is divided by the window size
    as torch's is, so it is given ``alpha * size``. Training and inference in PyTorch never take
    these paths.
    """

    def __init__(
        self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0, groups: int = 1
    ) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k, self.groups = size, alpha, beta, k, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export() and self.size % 2:
            return _onnx_lrn(x, self.size, self.alpha, self.beta, self.k, self.groups)
        if torch.jit.is_tracing() or torch.compiler.is_exporting():
            return lrn_reference(x, self.size, self.alpha, self.beta, self.k, self.groups)
        dtype = x.dtype
        compute = _compute_dtype(dtype)
        # The meta device (shapes without data: alexnet.summary) has no autocast to switch off.
        no_autocast = (torch.autocast(x.device.type, enabled=False) if x.device.type != "meta"
                       else contextlib.nullcontext())
        if torch.compiler.is_compiling():
            # Inductor fuses the element-wise work around the window sum and derives the backward
            # itself; it cannot trace the hand-written one, so the formula is given as plain operators.
            with no_autocast:
                x = x.to(compute)
                band = _lrn_band(x.shape[1], self.size, self.groups, x.device, compute)
                d = _channel_sum(x * x, band, self.alpha, self.k)
                # As in eager, two roots: Inductor's pow took 15 ms against their 5.3 ms for the
                # paper's first LRN at batch 32 in bf16 (2-core Xeon with AMX; benchmarks/fast_paths.py).
                r = torch.rsqrt(d * torch.sqrt(d)) if self.beta == 0.75 else d.pow(-self.beta)
                return (x * r).to(dtype)
        with no_autocast:
            x = x.to(compute)
            band = _lrn_band(x.shape[1], self.size, self.groups, x.device, compute)
            if torch.is_grad_enabled() and x.requires_grad:
                y = _LocalResponseNormFunction.apply(x, band, self.alpha, self.k, self.beta)
            else:
                y = _lrn_forward(x, band, self.alpha, self.k, self.beta, keep_for_backward=False)[0]
        return y.to(dtype)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, groups={self.groups}"


def lrn_reference(
    x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0, groups: int = 1
) -> torch.Tensor:
    """The paper's LRN in standard operators: ``F.local_response_norm`` with ``alpha * size`` (it
    averages the squares where the paper sums them), applied to each tower on its own.

    Slower than the layer's own path (a padded 3-D average pool), but made of operators that
    TorchScript and ``torch.export`` store and reload without this package."""
    towers = x.chunk(groups, dim=1) if groups > 1 else (x,)
    normalised = [F.local_response_norm(tower, size, alpha=alpha * size, beta=beta, k=k) for tower in towers]
    return torch.cat(normalised, dim=1) if groups > 1 else normalised[0]


def _onnx_lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int) -> torch.Tensor:
    """ONNX's ``LRN`` operator per tower. ONNX divides alpha by ``size`` (its window is
    c - (size-1)//2 .. c + ceil((size-1)/2), ours for odd sizes), so the paper's alpha is
    ``alpha * size`` there."""
    towers = x.chunk(groups, dim=1) if groups > 1 else (x,)
    attributes = {"size": size, "alpha": alpha * size, "beta": beta, "bias": k}
    normalised = [torch.onnx.ops.symbolic("LRN", (tower,), attributes, dtype=tower.dtype, shape=tower.shape)
                  for tower in towers]
    return torch.cat(normalised, dim=1) if groups > 1 else normalised[0]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype LRN computes in: the input's own for fp32, fp64 and bf16, else fp32.

    bf16 keeps its input's dtype: it has fp32's range, so squares cannot overflow; the window sum
    runs on the matrix unit with fp32 accumulation and is rounded once, to a d = k + alpha * sum
    that is as exact relatively as the bf16 output it divides. Converting to fp32 and back instead
    costs twice the memory traffic in every pass and took 60% of the paper network's bf16 forward
    pass (``benchmarks/layer_times.py``). fp16 (CUDA autocast) would overflow for inputs past 256,
    so it is computed in fp32."""
    return dtype if dtype in (torch.float32, torch.float64, torch.bfloat16) else torch.float32


def _lrn_band(channels: int, size: int, groups: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(C, C) matrix B with B[i, j] = 1 where channel j is in channel i's window (and tower).

    Ones and zeros are exact in every dtype; alpha is applied in the matrix multiply's fp32 epilogue,
    where bf16 would otherwise round 1e-4 by 0.14%."""
    if torch.compiler.is_compiling():  # traced once into the graph, where it becomes a constant
        return _build_lrn_band(channels, size, groups, device, dtype)
    # Built once per shape: its small kernels cost 5-10 ms a call on two busy cores (about 10%).
    with torch.inference_mode(False), torch.no_grad():  # usable by training after an inference pass
        return _cached_lrn_band(channels, size, groups, device, dtype)


def _build_lrn_band(channels: int, size: int, groups: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if channels % groups:
        raise ValueError(f"{channels} channels do not split into {groups} towers")
    index = torch.arange(channels, device=device)
    offset = index[None, :] - index[:, None]  # j - i
    # The same window as F.local_response_norm: n//2 channels below, (n-1)//2 above (2 and 2 for n=5).
    band = (offset >= -(size // 2)) & (offset <= (size - 1) // 2)
    per_tower = channels // groups
    band &= index[:, None] // per_tower == index[None, :] // per_tower
    return band.to(dtype)


_cached_lrn_band = functools.lru_cache(maxsize=64)(_build_lrn_band)


def _channel_sum(t: torch.Tensor, band: torch.Tensor, scale: float = 1.0, offset: float = 0.0) -> torch.Tensor:
    """offset + scale * sum_j band[i, j] * t[:, j] for every channel i, in t's memory format: one
    matrix multiply whose epilogue applies the scale and offset."""
    batch, channels, height, width = t.shape
    bias = t.new_full((1,), offset)
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        pixels = t.permute(0, 2, 3, 1).reshape(-1, channels)  # (B*H*W, C), a view in NHWC
        summed = torch.addmm(bias, pixels, band.t(), beta=1 if offset else 0, alpha=scale)
        return summed.view(batch, height, width, channels).permute(0, 3, 1, 2)
    summed = torch.baddbmm(bias.view(1, 1, 1), band.expand(batch, channels, channels),
                           t.reshape(batch, channels, height * width), beta=1 if offset else 0, alpha=scale)
    return summed.view(batch, channels, height, width)


def _lrn_forward(
    x: torch.Tensor, band: torch.Tensor, alpha: float, k: float, beta: float, keep_for_backward: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """y = x * d^-beta with d = k + alpha * band(x^2); also d^-beta and x d^(-beta-1) = y / d for
    the backward.

    Large fresh tensors cost page faults on CPU (about as much as the arithmetic), so results are
    written into buffers that are no longer needed."""
    squares = x * x
    d = _channel_sum(squares, band, alpha, k)
    if beta == 0.75:  # d^-3/4 = 1/sqrt(d * sqrt(d)): three cheap passes, 4x faster than pow's one
        r = torch.sqrt(d, out=squares).mul_(d).rsqrt_()
    else:
        r = torch.pow(d, -beta, out=squares)
    if not keep_for_backward:
        return torch.mul(x, r, out=d), None, None
    y = x * r
    return y, r, torch.div(y, d, out=d)


class _LocalResponseNormFunction(torch.autograd.Function):
    """y_i = x_i * d_i^-b with d_i = k + alpha * sum_j B[i, j] x_j^2, differentiated by hand:

    dL/dx_i = g_i d_i^-b - 2 alpha b x_i sum_j B[j, i] g_j x_j d_j^(-b-1)

    i.e. one more window sum (with B transposed) instead of autograd's chain through pow and the
    average pool; x_j d_j^(-b-1) is kept from the forward pass, so the backward makes four passes
    over the maps."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, band: torch.Tensor, alpha: float, k: float, beta: float) -> torch.Tensor:
        y, r, p = _lrn_forward(x, band, alpha, k, beta, keep_for_backward=True)
        ctx.save_for_backward(x, r, p, band)
        ctx.alpha, ctx.beta = alpha, beta
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None]:
        x, r, p, band = ctx.saved_tensors
        with torch.autocast(grad.device.type, enabled=False):
            grad = grad.to(x.dtype)
            t = grad * p  # g_j x_j d_j^(-b-1)
            summed = _channel_sum(t, band.t())
            dx = torch.mul(grad, r, out=t).addcmul_(x, summed, value=-2.0 * ctx.alpha * ctx.beta)
        return dx, None, None, None, None


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
    if pooling == "non-overlapping" and padding:
        # The padded 3x3 pools of the small variants halve 28 -> 14 -> 7 -> 4; a padded 2x2 pool would
        # give 15 -> 8 -> 5 and a larger FC6. Rounding up instead gives the same maps, so the two
        # poolings differ only in their windows, as in the paper (55 -> 27 -> 13 -> 6 for both).
        return nn.MaxPool2d(kernel_size=kernel, stride=POOL_STRIDE, ceil_mode=True)
    return nn.MaxPool2d(kernel_size=kernel, stride=POOL_STRIDE, padding=min(padding, kernel // 2))
