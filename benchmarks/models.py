"""The README's performance tables: our AlexNets against torchvision's and the peers, in one run.

For each model, ``alexnet.benchmark.run_benchmark`` times inference and a training step (forward,
backward, momentum-SGD step) through the fast path, ``torchvision.models.alexnet`` run plainly
(eager fp32, NCHW, default threads), and the peers of ``alexnet.peers`` (torchvision cast to bf16 or
fp32 and channels-last, eager and with ``--compile`` compiled; torchvision with autocast and fused
SGD for training; ONNX Runtime and, where installed, OpenVINO on our exported file) on the same
batch, the peers interleaved with ours; ratios are of images/s. Prints the full report of each model,
then two markdown tables: against the baseline, and against every peer.

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


def peers_table(results: list[BenchmarkResult]) -> str:
    """One row per contender and workload: images/s, fraction of the same-run matmul peak, ours / it."""
    lines = [
        "| model | workload | contender | images/s | of peak | ours / it |",
        "|---|---|---|---:|---:|---:|",
    ]
    for result in results:
        ours_label = f"ours ({result.precision}{', compiled' if result.compiled else ''})"
        for workload, ours, peers in (("inference", result.inference, result.peer_inference),
                                      ("training step", result.training, result.peer_training)):
            lines.append(f"| {result.model} | {workload} | {ours_label} | {ours.images_per_second:.1f} | "
                         f"{ours.peak_fraction:.0%} | |")
            for name, timing in sorted(peers.items(), key=lambda item: -item[1].images_per_second):
                lines.append(f"| {result.model} | {workload} | {name} | {timing.images_per_second:.1f} | "
                             f"{timing.peak_fraction:.0%} | {ours.images_per_second / timing.images_per_second:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="ours and the peers (default: one per physical core)")
    args = parser.parse_args(argv)

    results = []
    for name in args.models:
        result = run_benchmark(name, batch_size=args.batch_size, precision=args.precision, compile=args.compile,
                               repeats=args.repeats, device=args.device, threads=args.threads)
        print(format_result(result), end="\n\n", flush=True)
        results.append(result)
    print(markdown_table(results), end="\n\n")
    print(peers_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
