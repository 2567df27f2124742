"""The README's performance table: our AlexNets against torchvision's, measured in one run.

For each model, ``alexnet.benchmark.run_benchmark`` times inference and a training step (forward,
backward, momentum-SGD step) through the fast path, and ``torchvision.models.alexnet`` run plainly
(eager fp32, NCHW, default threads) on the same batch; the ratio is of images/s. Prints the full
report of each model, then one markdown table.

    .venv/bin/python benchmarks/models.py                      # batch 32, the models' own input
    .venv/bin/python benchmarks/models.py --compile --repeats 10

Timings on a machine whose cores are shared with other work are noisy; the spread column says how
much. Re-run on an idle machine for figures to publish.
"""

from __future__ import annotations

import argparse

from alexnet.benchmark import BenchmarkResult, format_result, run_benchmark

MODELS = ("alexnet_owt", "alexnet_paper")


def markdown_table(results: list[BenchmarkResult]) -> str:
    machine = results[0].machine
    lines = [
        f"Machine: {machine['cpu']}, {results[0].threads} threads; torch {machine['torch']}, "
        f"torchvision {machine['torchvision']}; batch {results[0].batch_size}. "
        f"Baseline: `torchvision.models.alexnet`, eager fp32, NCHW, default threads, same run.",
        "",
        "| model | input | workload | ours (images/s) | baseline (images/s) | ratio | ours GFLOP/s (of peak) | precision |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for result in results:
        shape = "x".join(map(str, result.input_shape))
        setting = result.precision + (", compiled" if result.compiled else "")
        for workload, ours, base in (
            ("inference", result.inference, result.baseline_inference),
            ("training step", result.training, result.baseline_training),
        ):
            lines.append(
                f"| {result.model} | {shape} | {workload} | {ours.images_per_second:.1f} | "
                f"{base.images_per_second:.1f} | {ours.images_per_second / base.images_per_second:.2f}x | "
                f"{ours.gflops:.0f} ({ours.peak_fraction:.0%}) | {setting} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    results = []
    for name in args.models:
        result = run_benchmark(name, batch_size=args.batch_size, precision=args.precision, compile=args.compile,
                               repeats=args.repeats, device=args.device)
        print(format_result(result), end="\n\n", flush=True)
        results.append(result)
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
