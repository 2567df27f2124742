"""Eager bf16 inference three ways, interleaved: our inference frame (autocast, weights cast once),
the same network cast to bf16 whole (no autocast), and torchvision's AlexNet cast the same way.

Says how much of the gap between our eager inference and torchvision's one-line cast is autocast's
own dispatch, and checks that the whole cast computes the same logits as our frame.

    .venv/bin/python benchmarks/bf16_cast.py                    # alexnet_owt, batch 32
    .venv/bin/python benchmarks/bf16_cast.py --model alexnet_paper
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchvision.models import alexnet as torchvision_alexnet

from alexnet.inference import inference_mode
from alexnet.models import build_model
from alexnet.perf import autocast_context, set_threads


def images_per_second(run, batch: int, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return batch * calls / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="alexnet_owt")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8, help="alternating windows of each contender")
    parser.add_argument("--calls", type=int, default=5, help="batches per window")
    args = parser.parse_args()
    threads = set_threads()
    torch.manual_seed(0)
    ours = build_model(args.model).eval()
    whole = build_model(args.model).eval()
    whole.load_state_dict(ours.state_dict())
    whole.to(torch.bfloat16, memory_format=torch.channels_last)
    peer = torchvision_alexnet().eval().to(torch.bfloat16, memory_format=torch.channels_last)
    images = torch.randn(args.batch_size, *ours.input_size).contiguous(memory_format=torch.channels_last)
    peer_images = torch.randn(args.batch_size, 3, 224, 224).to(torch.bfloat16).contiguous(
        memory_format=torch.channels_last)

    def frame():
        with autocast_context("cpu", torch.bfloat16):
            return ours(images)

    contenders = {
        "ours: autocast, weights cast once": frame,
        "ours cast to bf16 whole": lambda: whole(images.to(torch.bfloat16)),
        "torchvision cast to bf16 whole": lambda: peer(peer_images),
    }
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    with inference_mode(ours, torch.bfloat16), torch.no_grad():
        for run in contenders.values():
            for _ in range(3):  # warm-up: oneDNN primitives, allocator
                run()
        for _ in range(args.rounds):
            for name, run in contenders.items():
                rates[name].append(images_per_second(run, args.batch_size, args.calls))
        difference = (frame().float() - whole(images.to(torch.bfloat16)).float()).abs().max().item()
    print(f"{args.model}, batch {args.batch_size}, {threads} threads, bf16; medians of {args.rounds} windows")
    for name, values in rates.items():
        print(f"  {name:<36} {statistics.median(values):8.1f} images/s ({min(values):.0f}-{max(values):.0f})")
    print(f"  largest difference between our frame's logits and the whole cast's: {difference:.3g}")


if __name__ == "__main__":
    main()
