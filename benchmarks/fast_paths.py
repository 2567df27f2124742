"""The figures behind the bf16 fast paths, each timed in one run on this machine.

- LRN at the paper's first layer, (32, 96, 55, 55) channels-last: fp32 input (computed in fp32)
  against bf16 input (computed in bf16), forward and forward + backward;
- the compiled LRN with the two square roots against the same with ``pow``;
- ``alexnet_owt`` inference at batch 32 under bf16 autocast, weights cast every call against cast
  once (``alexnet.perf.inference_weights``);
- with ``--profile``, where a bf16 training step of ``alexnet_paper`` spends its time (per operator).

    .venv/bin/python benchmarks/fast_paths.py [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from alexnet.benchmark import machine_description
from alexnet.models import LocalResponseNorm, build_model
from alexnet.models.layers import _channel_sum, _lrn_band
from alexnet.perf import (
    autocast_context, inference_weights, optimizer_options, prepare_model, reuse_freed_memory, set_threads,
    to_channels_last,
)


def milliseconds(function, repeats: int = 10) -> float:
    for _ in range(2):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def lrn_figures() -> None:
    torch.manual_seed(0)
    x = (torch.relu(torch.randn(32, 96, 55, 55)) * 30).contiguous(memory_format=torch.channels_last)
    layer = LocalResponseNorm(groups=2)
    grad = torch.randn_like(x)
    for name, inputs in (("fp32", x), ("bf16", x.bfloat16())):
        with torch.no_grad():
            forward = milliseconds(lambda: layer(inputs))

        def both() -> None:
            leaf = inputs.detach().requires_grad_()
            layer(leaf).backward(grad.to(inputs.dtype))

        print(f"LRN (32, 96, 55, 55), {name} input: forward {forward:.1f} ms, "
              f"forward + backward {milliseconds(both, 5):.1f} ms")

    band = _lrn_band(96, 5, 2, x.device, torch.bfloat16)

    def roots(t):
        d = _channel_sum(t * t, band, 1e-4, 2.0)
        return t * torch.rsqrt(d * torch.sqrt(d))

    def power(t):
        return t * _channel_sum(t * t, band, 1e-4, 2.0).pow(-0.75)

    inputs = x.bfloat16()
    with torch.no_grad():
        for name, function in (("two roots", roots), ("pow", power)):
            compiled = torch.compile(function, dynamic=False)
            print(f"compiled LRN, bf16, {name}: {milliseconds(lambda: compiled(inputs)):.1f} ms")


def inference_weights_figures() -> None:
    model = prepare_model(build_model("alexnet_owt").eval())
    images = to_channels_last(torch.randn(32, 3, 224, 224))

    def run() -> None:
        with torch.inference_mode(), autocast_context("cpu", torch.bfloat16):
            model(images)

    every_call = milliseconds(run)
    with inference_weights(model, torch.bfloat16):
        once = milliseconds(run)
    print(f"alexnet_owt inference, batch 32, bf16: weights cast every call {every_call:.1f} ms, "
          f"cast once {once:.1f} ms")


def training_profile() -> None:
    model = prepare_model(build_model("alexnet_paper"))
    images = to_channels_last(torch.randn(32, 3, 227, 227))
    labels = torch.randint(0, 1000, (32,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, **optimizer_options("cpu"))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast_context("cpu", torch.bfloat16):
            loss = F.cross_entropy(model(images).float(), labels)
        loss.backward()
        optimizer.step()

    print(f"alexnet_paper bf16 training step, batch 32: {milliseconds(step, 5):.0f} ms; per operator, "
          f"milliseconds a step:")
    steps = 3
    with torch.profiler.profile() as profiler:
        for _ in range(steps):
            step()
    events = sorted(profiler.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    for event in events[:12]:
        print(f"  {event.key:45s} {event.self_cpu_time_total / steps / 1000:6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="also profile a training step")
    args = parser.parse_args()
    threads = set_threads()
    reuse_freed_memory()  # as every command does
    print(f"# {machine_description()['cpu']}, {threads} threads, torch {torch.__version__}")
    lrn_figures()
    inference_weights_figures()
    if args.profile:
        training_profile()


if __name__ == "__main__":
    main()
