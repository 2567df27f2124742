"""The fast path: every speed decision the models, training and evaluation share, in one place.

=========================  ==================================================================
function                   what it decides
=========================  ==================================================================
``resolve_precision``      bf16 autocast only where the hardware multiplies bf16 faster; fp16 on other GPUs
``autocast_context``       the matching ``torch.autocast`` (or nothing for fp32)
``gradient_scaler``        fp16's ``torch.amp.GradScaler`` (a disabled one for bf16 and fp32)
``inference_weights``      for inference, each weight cast to bf16 once instead of every call
``set_threads``            one intra-op thread per physical core
``reuse_freed_memory``     keep freed CPU memory for the next batch instead of faulting it in
``optimizer_options``      fused optimiser steps where torch has them
``prepare_model``          device, channels_last, optionally ``torch.compile``
``compile_for_inference``  ``torch.compile`` for inference, weights frozen into the graph
=========================  ==================================================================

Each choice was measured on a 2-core Intel Xeon (AVX-512 + VNNI, no AVX512_BF16), torch 2.14.1;
``alexnet benchmark`` and ``benchmarks/`` re-measure them on the machine at hand. Every option
gives the same results as the plain path within tolerance (``tests/test_perf.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .errors import AlexNetError

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")


def bf16_is_fast(device: torch.device | str) -> bool:
    """Whether bf16 autocast pays on ``device``: it multiplies bf16 in hardware, and faster than fp32.

    On a CPU without AVX512_BF16 or AMX, PyTorch emulates bf16 in fp32 and converts around every
    kernel: measured on an AVX-512 Xeon without them, a bf16 matmul ran at 48 GFLOP/s against
    189 in fp32, and bf16 convolutions 2-4x slower than fp32. Having the instructions is not
    enough either: on a Xeon with AVX512_BF16 but no AMX, a bf16 matmul ran at 165 GFLOP/s against
    310 in fp32 and our Fashion-MNIST training at 1,590 images/s against 2,000. So on a CPU the
    answer is measured, once per process: :func:`cpu_bf16_speedup`."""
    device = torch.device(device)
    if device.type == "cuda":
        # By default is_bf16_supported() is also true where bf16 is only emulated (T4, V100: compute
        # capability below 8.0), which runs it slower than fp16 and often than fp32.
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        native = any(getattr(torch.cpu, name, lambda: False)() for name in checks)
        return native and cpu_bf16_speedup() >= BF16_MIN_SPEEDUP
    return False


# bf16 must beat fp32 by this much in a matrix multiply before autocast is chosen: the convolutions
# and the casts around the ops that stay fp32 give some of it back.
BF16_MIN_SPEEDUP = 1.25


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup(size: int = 1024, repeats: int = 5) -> float:
    """How many times faster a ``size``-cubed matrix multiply runs in bf16 than in fp32 on this CPU,
    with the current threads (best of ``repeats``; about 0.2 s)."""

    def best_seconds(dtype: torch.dtype) -> float:
        a, b = torch.ones(size, size, dtype=dtype), torch.ones(size, size, dtype=dtype)
        a @ b  # warm-up: packing buffers, kernel selection
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        return min(times)

    return best_seconds(torch.float32) / best_seconds(torch.bfloat16)


def check_device(device: str) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; anything else is refused before any work."""
    kind, colon, index = device.partition(":")
    if device == "auto" or (kind == "cpu" and not colon) or (kind == "cuda" and (not colon or index.isdigit())):
        return
    raise AlexNetError(f"device must be auto, cpu, cuda or cuda:N, got {device[:40]!r}")


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto``: this process's CUDA device when there is one, else the CPU."""
    check_device(device)
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and torch.cuda.is_available():
        device = f"cuda:{local_rank}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AlexNetError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``: ``torch.bfloat16``, ``torch.float16``,
    or None for fp32.

    ``auto`` is bf16 where :func:`bf16_is_fast`; elsewhere fp16 on a CUDA device (with
    :func:`gradient_scaler` in training: the standard mixed precision of GPUs without native bf16)
    and fp32 on a CPU (a run records what it chose). ``bf16`` is bf16 even where it is slow (to
    check accuracy, say); ``fp16`` is for CUDA devices only (CPU autocast to fp16 has few fast
    kernels, and no gradient scaler); ``fp32`` never autocasts."""
    if precision not in PRECISIONS:
        raise AlexNetError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "fp16" and device.type != "cuda":
        raise AlexNetError(f"precision fp16 is for CUDA devices, and this runs on {device.type}; use bf16 or "
                           f"fp32 (or auto)")
    if precision == "bf16" or (precision == "auto" and bf16_is_fast(device)):
        return torch.bfloat16
    if precision == "fp16" or (precision == "auto" and device.type == "cuda"):
        return torch.float16
    return None


def recorded_precision(precision: str, device: torch.device | str) -> torch.dtype | None:
    """:func:`resolve_precision` for the precision a run recorded: a run trained in fp16 on a GPU is
    computed in fp32 off CUDA, where fp16 is refused (fp16's values are all exact in fp32)."""
    if precision == "fp16" and torch.device(device).type != "cuda":
        return None
    return resolve_precision(precision, device)


def precision_name(dtype: torch.dtype | None) -> str:
    """``bf16``, ``fp16`` or ``fp32``: the name of what :func:`resolve_precision` chose."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def gradient_scaler(device: torch.device | str, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """The loss scaling fp16 training needs (its gradients underflow fp16's range without it), as
    ``torch.amp.GradScaler``; for bf16 and fp32 a disabled scaler, whose calls do nothing."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=dtype == torch.float16)


def autocast_context(device: torch.device | str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``, or a context that does nothing for None."""
    _check_dtype(dtype)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


@contextlib.contextmanager
def inference_weights(model: nn.Module, dtype: torch.dtype | None) -> Iterator[nn.Module]:
    """Within, ``model``'s convolutions and linear layers hold bf16 copies of their weights and
    biases: for a pass of inference under :func:`autocast_context` with the same ``dtype``.

    Autocast casts every convolution's and linear layer's fp32 weights to bf16 again on every call
    (its cache lives only as long as one autocast region), which at batch 32 was 40% of
    alexnet_owt's bf16 inference time on a 2-core Xeon with AMX: 52 -> 32 ms a batch
    (``benchmarks/fast_paths.py``). Cast once here, autocast finds them in bf16 already and
    computes exactly what it would have (the same bf16 values, the same kernels;
    ``tests/test_perf.py``); batch norm, LRN and the input are left to autocast as before. The
    copies are new parameters set on the layers, and the original ones are put back on leaving,
    even after an error: the model's own parameters are never modified,
    so optimisers, DDP's gradient hooks and checkpoints holding them see no change. Within,
    though, ``state_dict()`` holds the copies and a weight tied between two layers is two copies:
    save and tie outside. Only fp32 parameters are cast, as autocast casts only fp32 (an fp64
    model stays fp64). Does nothing for fp32 (``dtype`` None), nor for a ``torch.compile`` wrapper:
    a compiled model recompiles for weights of another dtype, so pass the module it wraps only if
    that is meant (the benchmark times compiled inference so)."""
    _check_dtype(dtype)
    originals: list[tuple[nn.Module, str, nn.Parameter]] = []
    if dtype is not None and not isinstance(model, torch._dynamo.eval_frame.OptimizedModule):
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and not nn.utils.parametrize.is_parametrized(module):
                for name, parameter in module.named_parameters(recurse=False):
                    if parameter.dtype == torch.float32 and dtype != torch.float32:
                        originals.append((module, name, parameter))
    try:
        with torch.no_grad():
            for module, name, parameter in originals:
                setattr(module, name, nn.Parameter(parameter.to(dtype), requires_grad=False))
        yield model
    finally:
        for module, name, parameter in originals:
            setattr(module, name, parameter)


def _check_dtype(dtype) -> None:
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise AlexNetError(f"precision {dtype!r} here is a torch dtype or None; turn a name such as "
                           f"'auto' or 'bf16' into one with alexnet.perf.resolve_precision(name, device)")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: a container's or a job's share), as torch's
    DataLoader counts them when it warns of more workers than CPUs; ``os.cpu_count()`` counts the
    whole machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads of one core count once)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # macOS, Windows
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in allowed:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            return len(allowed)
    return max(1, len(cores))


def set_threads(threads: int | None = None) -> int:
    """Use ``threads`` intra-op threads (default: one per physical core) and return the number.

    A second hyper-thread on a core shares its vector units and only adds contention to the
    oneDNN and MKL kernels that do AlexNet's arithmetic. Under torchrun the machine's cores are
    shared out between its ``LOCAL_WORLD_SIZE`` processes: N processes with all the cores each
    would oversubscribe them N times over, which on CPU is several times slower, not faster."""
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    threads = threads or max(1, physical_cores() // local_processes)
    torch.set_num_threads(threads)
    return threads


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the system.

    glibc serves blocks of 128 KiB or more with mmap and unmaps them on free, so every large
    activation is faulted in again, zeroed page by page, on every step: measured on 2 cores, a
    fresh (256, 64, 28, 28) fp32 tensor cost 31 ms to fill against 7 ms in place, and this halved
    the time of LocalResponseNorm's forward and backward and sped a training step of alexnet_owt up
    by about 13%. The process keeps its peak memory until it exits, which suits training and
    benchmarks. Returns False where it does not apply (not Linux with glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**30))


def optimizer_options(device: torch.device | str) -> dict[str, bool]:
    """Keyword arguments that make torch's SGD/Adam/AdamW take one fused step over all parameters.

    Measured on 2 cores for AlexNet's FC6+FC7 weights (54M parameters): momentum SGD 116 ms
    (for-each) -> 65 ms (fused); Adam 376 ms -> 87 ms."""
    if torch.device(device).type in ("cpu", "cuda"):
        return {"fused": True}
    return {"foreach": True}


def prepare_model(
    model: nn.Module,
    device: torch.device | str = "cpu",
    *,
    channels_last: bool = True,
    compile: bool = False,
) -> nn.Module:
    """Move ``model`` to ``device`` and the fast layout; with ``compile``, wrap it in torch.compile.

    channels_last (NHWC) is the layout oneDNN's and cuDNN's convolutions work in; in NCHW every
    convolution reorders its input and output (measured: 1.4x faster inference for alexnet_owt on 2
    cores). Feed it inputs made channels_last too (:func:`to_channels_last`); the model is modified
    in place and returned, the compiled wrapper where ``compile`` (it shares the parameters)."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compile else model


def compile_for_inference(model: nn.Module) -> nn.Module:
    """``model`` through ``torch.compile`` with Inductor's freezing, for inference only.

    Freezing treats the weights as constants of the graph: they are folded (autocast's casts of
    them to bf16 included) and prepacked once into the layouts oneDNN's kernels read, instead of
    being reordered on every call. The compiled module must be called under ``torch.no_grad`` or
    ``torch.inference_mode`` (:func:`alexnet.inference.inference_mode`), and used only while the
    weights it first ran with are in place: it never sees a later change to them. Call it within
    :func:`inference_weights` to freeze the bf16 copies."""
    return torch.compile(model, options={"freezing": True})


def to_channels_last(images: torch.Tensor) -> torch.Tensor:
    """A (B, C, H, W) batch in NHWC memory order (the same values and shape)."""
    return images.contiguous(memory_format=torch.channels_last)
