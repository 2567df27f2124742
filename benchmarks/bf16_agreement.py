"""How often bf16 and fp32 predict the same class with the same trained weights.

For each run folder (or weights file) given, the test set is run through the weights twice, in
fp32 and under bf16 autocast (what ``--precision bf16`` trains and tests in), with the test views
the run used; prints the top-1 of each and the share of test images whose predicted class agrees.
Where the CPU has no native bf16 the bf16 pass is emulated: slow, but the arithmetic is the same.

    .venv/bin/python benchmarks/bf16_agreement.py runs/alexnet_small28-fashion-mnist-* [...]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from alexnet.evaluation import evaluate_model, test_loader
from alexnet.inference import open_trained
from alexnet.perf import resolve_device


def agreement(source: Path, device: torch.device) -> tuple[float, float, float, int]:
    """(fp32 top-1, bf16 top-1, agreement, images) of the weights in ``source``."""
    trained = open_trained(source, device=device)
    model, metadata, views = trained.model, trained.metadata, trained.views
    options = trained.loader_options(batch_size=1000)
    loader, classes = test_loader(metadata.dataset, views, trained.input_size, options)
    results = {}
    for dtype in (None, torch.bfloat16):  # None: no autocast, fp32 throughout
        metrics, logits = evaluate_model(model, loader, classes, device=device, views=views, collect=True,
                                         precision=dtype)
        results[dtype] = (metrics.top1, logits.argmax(1))
    same = (results[None][1] == results[torch.bfloat16][1]).float().mean().item()
    return results[None][0], results[torch.bfloat16][0], same, len(results[None][1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", type=Path, metavar="RUN_DIR|WEIGHTS")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    print(f"# {cpu}, torch {torch.__version__}, {device}")
    print("| weights | fp32 top-1 | bf16 top-1 | same top-1 class | test images |\n|---|---:|---:|---:|---:|")
    for source in args.sources:
        fp32, bf16, same, count = agreement(source, device)
        print(f"| {source.name} | {fp32:.2%} | {bf16:.2%} | {same:.2%} | {count:,} |", flush=True)


if __name__ == "__main__":
    main()
