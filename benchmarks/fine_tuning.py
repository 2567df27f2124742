"""Does fine-tuning pay when data is scarce? Transfer between two halves of Fashion-MNIST.

The only real data on every machine here is Fashion-MNIST, so the two tasks are its two halves:
task A is tops and dresses (T-shirt/top, trouser, pullover, dress, coat), task B footwear, bags and
shirts (sandal, shirt, sneaker, bag, ankle boot). ``alexnet_small28`` is trained on all of task A's
30,000 training images (the ``fast`` recipe), then task B is learned from 1% of its training set
(300 images, 60 a class) three times per seed: from scratch (the model's own recipe, ``fast``),
fine-tuned from the task A weights with the default flags (``--init-from``: the ``finetune``
recipe, the classifier replaced as the classes differ, the pretrained layers at a tenth of the
rate), and the same with the pretrained features frozen (``--freeze features``). Same epochs and
batch for all; test top-1 on task B's 5,000 test images, mean and spread over the seeds.

    .venv/bin/python benchmarks/fine_tuning.py            # ~30 minutes on two cores
    # the fine-tuned arms as they were before the finetune recipe: fast's rate, the backbone at 0.1x,
    # and task A's classifier kept (both tasks have five classes, and the count alone decided then)
    .venv/bin/python benchmarks/fine_tuning.py --tuned-recipe fast --backbone-lr-scale 0.1 --tuned-head keep
    .venv/bin/python benchmarks/fine_tuning.py --seeds 0 1 2 --fraction 0.01 --epochs 15

Both tasks are written as folders of PNGs (``train/``, ``val/``, ``test/``), so this also runs the
streaming path end to end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from torchvision.io import write_png

import alexnet.report
from alexnet.data import load_tensors
from alexnet.training import TrainConfig, train

TASK_A, TASK_B = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
VAL_PER_CLASS = 100


def write_task(root: Path, classes: tuple[int, ...], fraction: float, seed: int) -> Path:
    """Fashion-MNIST's ``classes`` as train/val/test folders of PNGs; train keeps ``fraction`` of each class."""
    train_set, test_set = load_tensors("fashion-mnist", "train"), load_tensors("fashion-mnist", "test")
    generator = torch.Generator().manual_seed(seed)
    for label in classes:
        name = train_set.classes[label].replace("/", "-")
        indices = torch.nonzero(train_set.labels == label).squeeze(1)
        indices = indices[torch.randperm(len(indices), generator=generator)]
        val, rest = indices[:VAL_PER_CLASS], indices[VAL_PER_CLASS:]
        keep = rest[: max(1, round(fraction * len(indices)))]
        test = torch.nonzero(test_set.labels == label).squeeze(1)
        for split, data, chosen in (("train", train_set, keep), ("val", train_set, val), ("test", test_set, test)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in chosen.tolist():
                write_png(data.images[index], str(folder / f"{index}.png"))
    return root


def run(config: TrainConfig) -> float:
    result = train(config)
    return result.test_metrics.top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fraction", type=float, default=0.01, help="of task B's training images")
    parser.add_argument("--epochs", type=int, default=15, help="on task B (both ways)")
    parser.add_argument("--pretrain-epochs", type=int, default=4, help="on task A")
    parser.add_argument("--tuned-recipe", default=None, help="the fine-tuned arms' recipe (default: finetune)")
    parser.add_argument("--backbone-lr-scale", type=float, default=None, help="the fine-tuned arms' (default: the recipe's)")
    parser.add_argument("--tuned-head", default="auto", choices=("auto", "keep", "new"),
                        help="the fine-tuned arms' classifier (default: auto, replaced as the class names differ)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the data and runs (default: a temp dir)")
    args = parser.parse_args()
    alexnet.report.build_report = lambda directory, **_: None  # figures are not the question here
    work = args.work or Path(tempfile.mkdtemp(prefix="alexnet-finetune-"))
    task_a = write_task(work / "task-a", TASK_A, 1.0, seed=0)
    common = dict(model="alexnet_small28", dataset="folder", quiet=True, precision="fp32", out=str(work / "runs"))
    pretrained = train(TrainConfig(**common, data_dir=str(task_a), epochs=args.pretrain_epochs, name="task-a"))
    print(f"task A: {pretrained.test_metrics.top1:.2%} test top-1 after {args.pretrain_epochs} epochs", flush=True)
    tuned = {"init_from": str(pretrained.directory), "recipe": args.tuned_recipe,
             "backbone_lr_scale": args.backbone_lr_scale, "head": args.tuned_head}
    arms = {"scratch": {}, "fine-tuned": tuned, "frozen features": {**tuned, "freeze": "features"}}
    results: dict[str, list[float]] = {name: [] for name in arms}
    for seed in args.seeds:
        task_b = write_task(work / f"task-b-{seed}", TASK_B, args.fraction, seed=seed)
        small = dict(common, data_dir=str(task_b), epochs=args.epochs, batch_size=32, seed=seed)
        for name, flags in arms.items():
            results[name].append(run(TrainConfig(**small, **flags, name=f"{name.replace(' ', '-')}-{seed}")))
        print(f"seed {seed}: " + ", ".join(f"{name} {values[-1]:.2%}" for name, values in results.items()), flush=True)
    summary = {name: {"mean": statistics.mean(values), "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
                      "runs": values} for name, values in results.items()}
    for name, row in summary.items():
        print(f"{name:>15}: {row['mean']:.2%} +- {row['stdev']:.2%} test top-1 on task B ({len(row['runs'])} seeds)")
    print(json.dumps({"fraction": args.fraction, "epochs": args.epochs, **summary}))


if __name__ == "__main__":
    main()
