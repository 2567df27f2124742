"""The strongest peers of our fast path: what a user gets on the same machine without this package.

``alexnet benchmark`` times each of them on the same batch, in the same process and threads as our
fast path, interleaved with it. A peer is a name and one call that runs a batch; which peers there
are depends on the precision the machine computes fastest in (``perf.resolve_precision``): on a CPU
with native bf16 the peers cast to bf16, on an fp32-only CPU they run in fp32.

==========================================  ==================================================
peer                                        what it is
==========================================  ==================================================
torchvision, cast, channels-last            ``torchvision.models.alexnet().to(dtype,
                                            memory_format=torch.channels_last)``: one line
torchvision, cast, channels-last, compiled  the same through ``torch.compile`` (with ``compile``)
torchvision, autocast, channels-last,       training: the standard mixed-precision recipe of
fused SGD                                   torch's own tutorials (compiled too, with ``compile``)
ONNX Runtime on our export                  our model exported by ``alexnet.export`` (fp32;
                                            ONNX Runtime's CPU provider has no bf16 convolution)
OpenVINO on our export                      the same file compiled by OpenVINO for the CPU with
                                            its bf16 (or f32) inference precision hint; only where
                                            the ``openvino`` extra is installed
==========================================  ==================================================
"""

from __future__ import annotations

import contextlib
import importlib.util
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from .export import export
from .perf import autocast_context, optimizer_options, precision_name, to_channels_last

OPENVINO_EXTRA = "pip install alexnet[openvino] (or: pip install openvino)"


@dataclass(frozen=True)
class Peer:
    """One peer workload: ``run`` computes one batch; ``model`` says whose arithmetic it does
    (``torchvision`` or ``ours``: our network run by another engine), for the FLOPs it is credited."""

    name: str
    run: Callable[[], object]
    model: str  # "torchvision" or "ours"
    compiled: bool = False  # its first calls compile: warm it up longer


def openvino_available() -> bool:
    """Whether the optional OpenVINO runtime is installed (``pip install alexnet[openvino]``)."""
    return importlib.util.find_spec("openvino") is not None


def _label(dtype: torch.dtype | None) -> str:
    return precision_name(dtype)


def inference_peers(
    ours: nn.Module, images: torch.Tensor, dtype: torch.dtype | None, *, compile: bool, threads: int,
    stack: contextlib.ExitStack,
) -> list[Peer]:
    """The inference peers on ``images`` (a CPU or CUDA batch, NCHW or channels-last).

    ``ours`` (fp32, on the images' device) is exported to ONNX once for the ONNX Runtime and OpenVINO
    peers, into a temporary folder that ``stack`` removes when it closes; those two run on the CPU only."""
    device = images.device
    peers = []
    cast = dtype or torch.float32
    baseline = torchvision.models.alexnet(num_classes=ours.num_classes).eval()
    baseline.to(device, cast, memory_format=torch.channels_last)
    cast_images = to_channels_last(images.to(cast))

    def torchvision_run(model: nn.Module) -> Callable[[], object]:
        def run() -> torch.Tensor:
            with torch.inference_mode():
                return model(cast_images)
        return run

    name = f"torchvision, {_label(dtype)} cast, channels-last"
    peers.append(Peer(name, torchvision_run(baseline), "torchvision"))
    if compile:
        peers.append(Peer(name + ", compiled", torchvision_run(torch.compile(baseline)), "torchvision", True))
    if device.type != "cpu" or tuple(images.shape[1:]) != tuple(ours.input_size):
        return peers  # the export is of the model's own input size, and runs on the CPU
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="alexnet-peers-")))
    onnx_path = folder / "ours.onnx"
    plain = ours.to(memory_format=torch.contiguous_format)
    export(plain, "onnx", out=onnx_path, dynamic_batch=True)
    ours.to(memory_format=torch.channels_last)  # back to the layout our fast path runs in
    array = images.contiguous().numpy()
    peers.append(Peer("ONNX Runtime fp32, our export", _onnx_runtime_run(onnx_path, array, threads), "ours"))
    if openvino_available():
        peers.append(Peer(f"OpenVINO {_label(dtype)}, our export", _openvino_run(onnx_path, array, dtype, threads),
                          "ours"))
    return peers


def _onnx_runtime_run(path: Path, array, threads: int) -> Callable[[], object]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: array})


def _openvino_run(path: Path, array, dtype: torch.dtype | None, threads: int) -> Callable[[], object]:
    import openvino

    core = openvino.Core()
    model = core.read_model(str(path))
    model.reshape(list(array.shape))  # a static batch: OpenVINO plans its kernels for the shape once
    compiled = core.compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16" if dtype == torch.bfloat16 else "f32",
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",  # one request at a time, all threads on it, as ours runs
    })
    request = compiled.create_infer_request()
    return lambda: request.infer({0: array})


def training_peers(
    num_classes: int, images: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype | None, *, compile: bool,
) -> list[Peer]:
    """torchvision's AlexNet trained the standard fast way: autocast to ``dtype`` (none for fp32),
    channels-last, fused momentum SGD; also compiled with ``compile``."""
    device = images.device
    fast_images = to_channels_last(images)
    peers = []
    for compiled in (False, True) if compile else (False,):
        model = torchvision.models.alexnet(num_classes=num_classes).to(device, memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, **optimizer_options(device))
        runner = torch.compile(model) if compiled else model
        name = f"torchvision, {'autocast ' + _label(dtype) if dtype else 'fp32'}, channels-last, fused SGD"
        peers.append(Peer(name + (", compiled" if compiled else ""),
                          _training_step(runner, fast_images, labels, optimizer, dtype), "torchvision", compiled))
    return peers


def _training_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
                   dtype: torch.dtype | None) -> Callable[[], None]:
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(images.device, dtype):
            loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    return step

