"""How fast a model runs here, next to the plain baseline measured in the same run.

``run_benchmark`` times inference and a training step (forward, backward and a momentum-SGD step)
of one of our models through the fast path (:mod:`alexnet.perf`), and the same for the plain
baseline: ``torchvision.models.alexnet``, eager, fp32, contiguous NCHW, torch's default threads
and allocator. Achieved GFLOP/s count 2 FLOPs per multiply-accumulate of the architecture table
(:func:`alexnet.summarize`) and 3x that for a training step (the backward pass does twice the
forward's arithmetic); they are set against a large matrix multiply timed in the same run, in the
same precision, as this machine's peak. The strongest peers (:mod:`alexnet.peers`: torchvision cast
to bf16 and channels-last, its autocast training recipe, ONNX Runtime and OpenVINO on our export)
are timed on the same batch in the same threads, interleaved with ours.
"""

from __future__ import annotations

import contextlib
import math
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn

from .errors import AlexNetError
from .models import build_model
from .peers import inference_peers, training_peers
from .perf import (
    autocast_context, compile_for_inference, inference_weights, optimizer_options, precision_name, prepare_model,
    resolve_device, resolve_precision, reuse_freed_memory, set_threads, to_channels_last,
)
from .summary import summarize

TRAINING_FLOPS_PER_FORWARD = 3  # forward, gradient w.r.t. the activations, gradient w.r.t. the weights
MATMUL_SIDE = 2048  # 17 GFLOP per multiply: long enough to reach the kernel's steady rate
COMPILE_WARMUP = 3  # calls that may (re)compile: the first traces; train/eval and grads appearing retrace


@dataclass
class Timing:
    """Images/s of one workload over several timed repetitions (after warm-up)."""

    seconds: list[float]  # per repetition (one batch)
    batch_size: int
    flops_per_image: float  # 2 x MACs, x3 for a training step
    peak_gflops: float  # the matrix-multiply peak in the precision this ran in

    @property
    def images_per_second(self) -> float:
        return self.batch_size / statistics.median(self.seconds)

    @property
    def spread(self) -> tuple[float, float]:
        """Slowest and fastest repetition, in images/s."""
        return self.batch_size / max(self.seconds), self.batch_size / min(self.seconds)

    @property
    def gflops(self) -> float:
        return self.images_per_second * self.flops_per_image / 1e9

    @property
    def peak_fraction(self) -> float:
        return self.gflops / self.peak_gflops


@dataclass
class Compilation:
    """What ``torch.compile`` cost and when it pays for itself."""

    seconds: float  # first calls minus a steady call: tracing, code generation, C++ compilation
    eager_seconds_per_step: float  # the fast path without compile, for comparison
    compiled_seconds_per_step: float

    @property
    def amortised_after(self) -> int | None:
        """Steps after which compiling has saved more than it cost; None if it never does.

    The compile time is that of this process: with inductor's on-disk cache warm from an earlier
    run it is several times shorter than the first time."""
        saved = self.eager_seconds_per_step - self.compiled_seconds_per_step
        return math.ceil(self.seconds / saved) if saved > 0 else None


@dataclass
class BenchmarkResult:
    model: str
    input_shape: tuple[int, int, int]
    batch_size: int
    precision: str  # what ran: fp32 or bf16 (``auto`` resolved by the hardware)
    channels_last: bool
    compiled: bool
    threads: int
    baseline_threads: int
    macs_per_image: int
    baseline_macs_per_image: int
    matmul_peak_gflops: dict[str, float]  # precision -> best GFLOP/s of a large matmul
    inference: Timing
    training: Timing
    baseline_inference: Timing
    baseline_training: Timing
    compile_inference: Compilation | None = None
    compile_training: Compilation | None = None
    machine: dict[str, str] = field(default_factory=dict)
    # The peers (alexnet.peers), timed interleaved with ours after the baseline: name -> timing
    peer_inference: dict[str, Timing] = field(default_factory=dict)
    peer_training: dict[str, Timing] = field(default_factory=dict)

    def fastest_peer(self, workload: str) -> tuple[str, Timing] | None:
        """The (name, timing) of the peer with the most images/s on ``inference`` or ``training``."""
        peers = self.peer_inference if workload == "inference" else self.peer_training
        return max(peers.items(), key=lambda item: item[1].images_per_second, default=None)

    def peer_ratio(self, workload: str) -> float | None:
        """Our images/s over the fastest peer's on ``workload``; None without peers."""
        peer = self.fastest_peer(workload)
        ours = self.inference if workload == "inference" else self.training
        return ours.images_per_second / peer[1].images_per_second if peer else None

    @property
    def inference_ratio(self) -> float:
        return self.inference.images_per_second / self.baseline_inference.images_per_second

    @property
    def training_ratio(self) -> float:
        return self.training.images_per_second / self.baseline_training.images_per_second


def machine_description() -> dict[str, str]:
    """CPU (or GPU) model and the library versions, for the header of every benchmark."""
    description = {
        "cpu": _cpu_model(),
        "cores": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        description["gpu"] = torch.cuda.get_device_name()
    return description


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    function: Callable[[], object], repeats: int, warmup: int, device: torch.device
) -> tuple[list[float], list[float]]:
    """Seconds of each of ``warmup`` then ``repeats`` calls (warm-up times returned separately)."""
    times = []
    for _ in range(warmup + repeats):
        _synchronize(device)
        start = time.perf_counter()
        function()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return times[:warmup], times[warmup:]


def matmul_peak_gflops(dtype: torch.dtype, device: torch.device, repeats: int = 3) -> float:
    """Best GFLOP/s of a 2048^3 matrix multiply in ``dtype``: this machine's attainable peak."""
    generator = torch.Generator(device).manual_seed(0)
    a = torch.randn(MATMUL_SIDE, MATMUL_SIDE, generator=generator, device=device).to(dtype)
    b = torch.randn(MATMUL_SIDE, MATMUL_SIDE, generator=generator, device=device).to(dtype)
    _, seconds = time_calls(lambda: torch.mm(a, b), repeats, warmup=1, device=device)
    return 2 * MATMUL_SIDE**3 / min(seconds) / 1e9


def _inference(model: nn.Module, images: torch.Tensor, context: Callable) -> Callable[[], object]:
    def run() -> torch.Tensor:
        with torch.inference_mode(), context():
            return model(images)

    return run


def _training_step(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
    context: Callable,
) -> Callable[[], None]:
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with context():
            loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    return step


def run_benchmark(
    model_name: str = "alexnet_owt",
    *,
    batch_size: int = 32,
    precision: str = "auto",
    compile: bool = False,
    input_shape: tuple[int, int, int] | None = None,
    repeats: int = 5,
    warmup: int = 1,
    device: str | torch.device = "cpu",
    channels_last: bool = True,
    threads: int | None = None,
    peers: bool = True,
) -> BenchmarkResult:
    """Time ``model_name`` through the fast path, torchvision's AlexNet plainly, and the peers, in one run.

    The baseline runs first, in the process's default threads and allocator; then the fast path
    sets its threads and allocator (:func:`alexnet.perf.set_threads`,
    :func:`alexnet.perf.reuse_freed_memory`) and runs, interleaved call by call with the peers
    (:mod:`alexnet.peers`; ``peers=False`` leaves them out) in the same threads. With ``compile``, the
    fast path is also timed without compile to say after how many steps compiling pays, and the
    peers that can be compiled are timed compiled too. Inference compiled is
    :func:`alexnet.perf.compile_for_inference`, what ``evaluate`` compiles."""
    if batch_size < 1 or repeats < 1 or warmup < 0 or (threads is not None and threads < 1):
        raise AlexNetError("batch size, repeats and threads must be at least 1, warm-up at least 0 (leave --threads "
                           "out for one per physical core)")
    device = resolve_device(device) if isinstance(device, str) else device  # tpu, or cuda with none: one line
    torch.manual_seed(0)
    model = build_model(model_name)
    input_shape = tuple(input_shape or model.input_size)
    if input_shape[0] != 3 or min(input_shape[1:]) < 63:
        raise AlexNetError(_not_comparable(model, model_name, input_shape))
    macs = summarize(model, input_shape).macs  # raises our error for a size the model cannot take
    baseline = torchvision.models.alexnet(num_classes=model.num_classes)
    baseline_macs = summarize(baseline, input_shape).macs
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, *input_shape, generator=generator).to(device)
    labels = torch.randint(0, model.num_classes, (batch_size,), generator=generator).to(device)

    # The plain baseline, the way one would first write it.
    baseline_threads = torch.get_num_threads()
    baseline.to(device)
    fp32_peak = matmul_peak_gflops(torch.float32, device)
    baseline.eval()
    _, base_inference = time_calls(_inference_plain(baseline, images), repeats, warmup, device)
    baseline.train()
    plain_sgd = torch.optim.SGD(baseline.parameters(), lr=0.01, momentum=0.9)
    _, base_training = time_calls(_training_step(baseline, images, labels, plain_sgd,
                                                    contextlib.nullcontext), repeats,
                                  warmup, device)
    del baseline, plain_sgd

    # The fast path, and the peers interleaved with it call by call: on a machine shared with other
    # work, load that comes and goes then slows every contender alike instead of whichever ran then.
    threads = set_threads(threads) if device.type == "cpu" else torch.get_num_threads()
    if device.type == "cpu":
        reuse_freed_memory()
    dtype = resolve_precision(precision, device)
    name = precision_name(dtype)
    peaks = {"fp32": fp32_peak}
    if dtype is not None:
        peaks[name] = matmul_peak_gflops(dtype, device)
    context = lambda: autocast_context(device, dtype)  # noqa: E731
    fast_images = to_channels_last(images) if channels_last else images
    eager = prepare_model(model, device, channels_last=channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, **optimizer_options(device))
    flops, baseline_flops = 2 * macs, 2 * baseline_macs
    peer_flops = {"ours": flops, "torchvision": baseline_flops}
    compile_warmup = max(warmup, COMPILE_WARMUP)
    with contextlib.ExitStack() as stack:
        inference_peer_list = (inference_peers(eager, images, dtype, compile=compile, threads=threads, stack=stack)
                               if peers else [])
        eager.eval()
        with inference_weights(eager, dtype):  # as evaluate and predict run: weights cast once
            calls = {"ours": (_inference(eager, fast_images, context), warmup)}
            if compile:
                compiled = compile_for_inference(eager)
                calls["ours, compiled"] = (_inference(compiled, fast_images, context), compile_warmup)
            calls |= {peer.name: (peer.run, compile_warmup if peer.compiled else warmup)
                      for peer in inference_peer_list}
            first, timed = time_interleaved(calls, repeats, device)
    ours_key = "ours, compiled" if compile else "ours"
    compile_inference = (_compilation(first["ours, compiled"], timed["ours"], timed["ours, compiled"])
                         if compile else None)
    peer_inference = {peer.name: Timing(timed[peer.name], batch_size, peer_flops[peer.model], peaks[name])
                      for peer in inference_peer_list}
    del inference_peer_list, calls

    eager.train()
    training_peer_list = (training_peers(model.num_classes, images, labels, dtype, compile=compile)
                          if peers else [])
    calls = {"ours": (_training_step(eager, fast_images, labels, optimizer, context), warmup)}
    if compile:
        calls["ours, compiled"] = (_training_step(torch.compile(eager), fast_images, labels, optimizer, context),
                                   compile_warmup)
    calls |= {peer.name: (peer.run, compile_warmup if peer.compiled else warmup) for peer in training_peer_list}
    first, timed_training = time_interleaved(calls, repeats, device)
    compile_training = (_compilation(first["ours, compiled"], timed_training["ours"], timed_training["ours, compiled"])
                        if compile else None)
    peer_training = {peer.name: Timing(timed_training[peer.name], batch_size,
                                       TRAINING_FLOPS_PER_FORWARD * peer_flops[peer.model], peaks[name])
                     for peer in training_peer_list}

    return BenchmarkResult(
        model=model_name, input_shape=input_shape, batch_size=batch_size, precision=name,
        channels_last=channels_last, compiled=compile, threads=threads,
        baseline_threads=baseline_threads, macs_per_image=macs, baseline_macs_per_image=baseline_macs,
        matmul_peak_gflops=peaks,
        inference=Timing(timed[ours_key], batch_size, flops, peaks[name]),
        training=Timing(timed_training[ours_key], batch_size, TRAINING_FLOPS_PER_FORWARD * flops, peaks[name]),
        baseline_inference=Timing(base_inference, batch_size, baseline_flops, fp32_peak),
        baseline_training=Timing(base_training, batch_size, TRAINING_FLOPS_PER_FORWARD * baseline_flops,
                                 fp32_peak),
        compile_inference=compile_inference, compile_training=compile_training,
        machine=machine_description() | {"cores": str(threads)},
        peer_inference=peer_inference, peer_training=peer_training,
    )


def time_interleaved(
    calls: dict[str, tuple[Callable[[], object], int]], repeats: int, device: torch.device
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds of each call: ``calls`` maps a name to (function, warm-up calls). Every function is
    warmed up first, then the timed calls go round robin, one of each per round. Returns the
    warm-up and the timed seconds, by name."""
    first = {name: time_calls(function, 0, count, device)[0] for name, (function, count) in calls.items()}
    timed: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (function, _) in calls.items():
            timed[name] += time_calls(function, 1, 0, device)[1]
    return first, timed


def _inference_plain(model: nn.Module, images: torch.Tensor) -> Callable[[], object]:
    def run() -> torch.Tensor:
        with torch.no_grad():
            return model(images)

    return run


def _compilation(first: list[float], eager: list[float], compiled: list[float]) -> Compilation:
    steady = statistics.median(compiled)
    return Compilation(
        seconds=max(0.0, sum(first) - steady * len(first)),
        eager_seconds_per_step=statistics.median(eager),
        compiled_seconds_per_step=steady,
    )


def _not_comparable(model, name: str, input_shape: tuple[int, int, int]) -> str:
    """Why ``name`` at ``input_shape`` cannot be timed against the baseline, torchvision's AlexNet (3-channel
    images of at least 63x63), and what to do instead."""
    shape = "x".join(map(str, input_shape))
    larger = (3, max(63, input_shape[1]), max(63, input_shape[2]))
    try:
        summarize(model, larger)
        hint = f"pass --input {'x'.join(map(str, larger))} or larger"
    except AlexNetError:  # a model for small images only: its own training speed is in its log
        hint = (f"{name} takes only its own image size; benchmark a model for ImageNet-sized images (alexnet_owt, "
                f"alexnet_paper), or see {name}'s images/s in the log of `alexnet train --model {name}` and its "
                f"MACs in `alexnet summary {name}`")
    return (f"benchmark times a model against torchvision's AlexNet, which takes 3-channel images of at least "
            f"63x63; {name} would be given {shape}: {hint}")


def format_result(result: BenchmarkResult) -> str:
    """The header (machine, versions, settings) and one table row per workload."""
    machine = result.machine
    shape = "x".join(map(str, result.input_shape))
    peaks = ", ".join(f"{name} {gflops:.0f} GFLOP/s" for name, gflops in result.matmul_peak_gflops.items())
    lines = [
        f"{result.model}, batch {result.batch_size}, input {shape}",
        f"machine: {machine.get('cpu', '?')}" + (f", {machine['gpu']}" if "gpu" in machine else ""),
        f"torch {machine.get('torch')}, torchvision {machine.get('torchvision')}, python {machine.get('python')}",
        f"ours: {result.precision}, {'channels_last' if result.channels_last else 'NCHW'}, "
        f"{'compiled (inference with frozen weights)' if result.compiled else 'eager'}, {result.threads} threads, fused SGD, freed memory reused"
        + (f", inference weights cast to {result.precision} once" if result.precision != "fp32" else ""),
        f"baseline: torchvision alexnet, eager fp32, NCHW, {result.baseline_threads} threads (torch's default); "
        f"peers in our threads, timed interleaved with ours",
        f"matrix-multiply peak ({MATMUL_SIDE}^3, same run): {peaks}",
        f"MACs per image: ours {result.macs_per_image:,}, baseline {result.baseline_macs_per_image:,}",
        "",
    ]
    header = ("workload", "images/s", "spread (min-max)", "GFLOP/s", "of peak", "vs baseline")
    rows = []
    for label, ours, base, peers in (
        ("inference", result.inference, result.baseline_inference, result.peer_inference),
        ("training step", result.training, result.baseline_training, result.peer_training),
    ):
        ratio = ours.images_per_second / base.images_per_second
        rows.append(_row(f"{label}, ours", ours, f"{ratio:.2f}x"))
        rows.append(_row(f"{label}, baseline", base, ""))
        for name, timing in peers.items():
            rows.append(_row(f"{label}, {name}", timing, f"{timing.images_per_second / base.images_per_second:.2f}x"))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines.append("  ".join(f"{cell:<{w}}" for cell, w in zip(header, widths)).rstrip())
    lines.append("-" * len(lines[-1]))
    lines += ["  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)).rstrip() for row in rows]
    for workload in ("inference", "training"):
        peer = result.fastest_peer(workload)
        if peer is not None:
            lines.append(f"ours / fastest peer ({workload}): {result.peer_ratio(workload):.2f}x, against {peer[0]}")
    for label, compilation in (("inference", result.compile_inference), ("training", result.compile_training)):
        if compilation is not None:
            after = compilation.amortised_after
            pays = f"amortised after {after} steps" if after else "never amortised (not faster than eager)"
            lines.append(
                f"compile ({label}): {compilation.seconds:.1f} s; step {compilation.eager_seconds_per_step * 1e3:.0f} ms "
                f"eager -> {compilation.compiled_seconds_per_step * 1e3:.0f} ms compiled; {pays}"
            )
    return "\n".join(lines)


def _row(label: str, timing: Timing, ratio: str) -> tuple[str, ...]:
    slow, fast = timing.spread
    return (label, f"{timing.images_per_second:.1f}", f"{slow:.1f}-{fast:.1f}", f"{timing.gflops:.1f}",
            f"{timing.peak_fraction:.0%}", ratio)
