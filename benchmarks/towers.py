"""The paper's two towers: one grouped convolution (groups=2) against two convolutions and a concat.

alexnet_paper's conv2, conv4 and conv5 see only their own tower's maps (Section 3.2). PyTorch says
so with ``nn.Conv2d(groups=2)``; the alternative is to run the towers as separate convolutions on
the two halves of the channels and concatenate, as the paper's two GPUs did. This times both,
forward and forward+backward, in both memory formats, at the paper's shapes (batch 32), after
checking that they compute the same thing.

    .venv/bin/python benchmarks/towers.py

Measured twice on a 2-core Intel Xeon @ 2.50GHz (AVX-512), torch 2.14.1, shared with other work:
the split was 1.1-1.75x slower than groups=2 in 23 of the 24 cases (e.g. conv2 in NHWC, forward:
109 ms grouped, 134 ms split; forward+backward 333 ms and 584 ms), the exception a 0.76 taken at
load average 7. So the models keep ``groups=2``: no tower-splitting option is offered.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from alexnet.benchmark import machine_description
from alexnet.perf import reuse_freed_memory, set_threads

# (layer, input channels, output channels, kernel, padding, side of the maps) from Figure 2.
LAYERS = (("conv2", 96, 256, 5, 2, 27), ("conv4", 384, 384, 3, 1, 13), ("conv5", 384, 256, 3, 1, 13))


def median_seconds(function, repeats: int) -> float:
    function()  # warm-up: oneDNN picks and caches its kernel on the first call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def grouped(x, weight, bias, padding):
    return F.conv2d(x, weight, bias, padding=padding, groups=2)


def split(x, weight, bias, padding):
    """Each tower on its own half of the channels, then the maps side by side again."""
    towers = zip(x.chunk(2, 1), weight.chunk(2, 0), bias.chunk(2, 0))
    return torch.cat([F.conv2d(part, w, b, padding=padding) for part, w, b in towers], 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    threads = set_threads()
    reuse_freed_memory()
    machine = machine_description()
    print(f"machine: {machine['cpu']}, {threads} threads; torch {machine['torch']}; batch {args.batch_size}\n")
    print("| layer | layout | pass | groups=2 (ms) | split towers (ms) | split / grouped |")
    print("|---|---|---|---:|---:|---:|")
    torch.manual_seed(0)
    for layout, memory_format in (("NCHW", torch.contiguous_format), ("NHWC", torch.channels_last)):
        for name, inputs, outputs, kernel, padding, side in LAYERS:
            x = torch.randn(args.batch_size, inputs, side, side).contiguous(memory_format=memory_format)
            weight = (torch.randn(outputs, inputs // 2, kernel, kernel) * 0.01).contiguous(memory_format=memory_format)
            bias = torch.randn(outputs)
            torch.testing.assert_close(split(x, weight, bias, padding), grouped(x, weight, bias, padding),
                                       rtol=1e-4, atol=1e-4)
            for label in ("forward", "forward+backward"):
                times = []
                for conv in (grouped, split):
                    if label == "forward":
                        def run(conv=conv):
                            with torch.no_grad():
                                conv(x, weight, bias, padding)
                    else:
                        leaf_x, leaf_w = x.clone().requires_grad_(), weight.clone().requires_grad_()

                        def run(conv=conv, leaf_x=leaf_x, leaf_w=leaf_w):
                            conv(leaf_x, leaf_w, bias, padding).sum().backward()
                    times.append(median_seconds(run, args.repeats))
                print(f"| {name} | {layout} | {label} | {times[0] * 1e3:.1f} | {times[1] * 1e3:.1f} | "
                      f"{times[1] / times[0]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
