"""Where a model's forward pass spends its time, layer by layer, on the fast path.

Each layer of ``features`` and ``classifier`` is timed with forward hooks (median of the timed
passes) under the model's fast-path settings (channels-last, the precision given), and the paper's
grouped convolutions are timed against two convolutions and a concat at Figure 2's shapes.

    .venv/bin/python benchmarks/layer_times.py [--model alexnet_paper] [--precision bf16] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from alexnet.benchmark import machine_description
from alexnet.models import build_model
from alexnet.perf import autocast_context, inference_weights, prepare_model, reuse_freed_memory, set_threads


def layer_times(model: nn.Module, images: torch.Tensor, autocast, passes: int) -> list[tuple[str, float]]:
    """(layer, median seconds) for every layer of the model's two Sequentials, in order."""
    times: dict[int, list[float]] = {}
    layers = [*model.features, *model.classifier]
    handles = []
    for index, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(lambda module, args, i=index: times.setdefault(i, []).append(
            -time.perf_counter())))
        handles.append(layer.register_forward_hook(lambda module, args, out, i=index: times[i].__setitem__(
            -1, times[i][-1] + time.perf_counter())))
    with torch.no_grad(), autocast:
        for _ in range(passes + 1):
            model(images)
    for handle in handles:
        handle.remove()
    return [(f"{index:02d} {type(layer).__name__}" + (" (groups=2)" if getattr(layer, "groups", 1) == 2 else ""),
             statistics.median(times[index][1:])) for index, layer in enumerate(layers)]


def grouped_against_split(autocast, batch: int, repeats: int = 5) -> list[str]:
    rows = []
    for name, cin, cout, kernel, padding, side in (("conv2", 96, 256, 5, 2, 27), ("conv4", 384, 384, 3, 1, 13),
                                                   ("conv5", 384, 256, 3, 1, 13)):
        grouped = nn.Conv2d(cin, cout, kernel, padding=padding, groups=2).to(memory_format=torch.channels_last)
        halves = [nn.Conv2d(cin // 2, cout // 2, kernel, padding=padding).to(memory_format=torch.channels_last)
                  for _ in range(2)]
        maps = torch.randn(batch, cin, side, side).to(memory_format=torch.channels_last)
        timed = {}
        for label, run in (("groups=2", lambda: grouped(maps)),
                           ("split", lambda: torch.cat([h(t) for h, t in zip(halves, maps.chunk(2, 1))], 1))):
            with torch.no_grad(), autocast:
                run()
                start = time.perf_counter()
                for _ in range(repeats):
                    run()
            timed[label] = (time.perf_counter() - start) / repeats
        rows.append(f"{name}: groups=2 {timed['groups=2'] * 1000:.1f} ms, split {timed['split'] * 1000:.1f} ms")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="alexnet_paper")
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    threads = set_threads()
    reuse_freed_memory()  # as every command does (alexnet.perf)
    device = torch.device("cpu")
    model = build_model(args.model).eval()
    prepare_model(model, device, channels_last=True)
    images = torch.randn(args.batch_size, *model.input_size).to(memory_format=torch.channels_last)
    autocast = autocast_context(device, torch.bfloat16 if args.precision == "bf16" else None)
    print(f"# {machine_description()['cpu']}, {threads} threads, {args.model}, batch {args.batch_size}, "
          f"{args.precision} inference")
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    with inference_weights(model, dtype):  # as evaluate and predict run
        rows = layer_times(model, images, autocast, args.passes)
    total = sum(seconds for _, seconds in rows)
    for name, seconds in rows:
        print(f"{name:<36} {seconds * 1000:8.1f} ms {seconds / total:6.1%}")
    print(f"{'total':<36} {total * 1000:8.1f} ms")
    for row in grouped_against_split(autocast_context(device, torch.bfloat16 if args.precision == "bf16" else None),
                                     args.batch_size):
        print(row)


if __name__ == "__main__":
    main()
