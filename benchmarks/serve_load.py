"""Requests/s and latency of ``alexnet serve`` under load: dynamic batching against ``--max-batch 1``.

Two servers of the same weights run side by side on 127.0.0.1 (nothing leaves the machine): one
batching (``--max-batch 32 --max-delay-ms 5``, the defaults), one not (``--max-batch 1``). For each
number of concurrent clients (1, 8, 32), each server gets ``--requests`` requests (2,000) from an
asyncio client (httpx), one after the other so they never compete; before each measured round, a
short unmeasured one. A request is one image, the protocol's ``infer`` with Triton's binary tensor
extension: a prepared 3x224x224 FP32 image (``--input tensor``, the model's own work), or a
500x375 JPEG the server decodes and prepares (``--input files``: decoding runs per request, in
threads, and is not batched). The weights are ``--model``'s (``alexnet_owt``, the 224-px one) with
random values: the work is the same as trained ones'. Prints requests/s, p50/p99 latency, failed
requests and the mean batch each server ran (its statistics route), then the ratios.

    .venv/bin/python benchmarks/serve_load.py [--requests 2000] [--clients 1,8,32] [--model alexnet_owt]
        [--device cpu] [--precision auto] [--input tensor|files]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from alexnet.models import build_model
from alexnet.serve.protocol import HEADER_LENGTH, serialize_bytes
from alexnet.weights import WeightsMetadata, save_weights

ROOT = Path(__file__).resolve().parent.parent
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_weights(path: Path, model_name: str, precision: str) -> Path:
    torch.manual_seed(0)
    model = build_model(model_name).eval()
    with torch.no_grad():
        classes = model(torch.zeros(1, *model.input_size)).shape[-1]  # the builder's default class count
    metadata = WeightsMetadata(model=model_name, model_options={}, class_names=tuple(f"class {i}" for i in range(classes)),
                               input_size=tuple(model.input_size), mean=IMAGENET_MEAN[:model.input_size[0]],
                               std=IMAGENET_STD[:model.input_size[0]], precision=precision,
                               test_views={"crop_fraction": 224 / 256, "views": "centre"})
    return save_weights(path, model, metadata)


def request_body(kind: str, shape: tuple[int, ...]) -> tuple[bytes, dict]:
    """One request: an image as the protocol's binary infer body, and its headers."""
    if kind == "tensor":
        data = np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32).tobytes()
        spec = {"name": "images", "datatype": "FP32", "shape": [1, *shape]}
    else:
        from PIL import Image
        import io

        with Image.open(ROOT / "tests" / "data" / "rocket.jpg") as photo:
            buffer = io.BytesIO()
            photo.convert("RGB").resize((500, 375)).save(buffer, format="JPEG", quality=90)
        data = serialize_bytes([buffer.getvalue()])
        spec = {"name": "image_files", "datatype": "BYTES", "shape": [1]}
    spec["parameters"] = {"binary_data_size": len(data)}
    header = json.dumps({"inputs": [spec], "outputs": [{"name": "probabilities", "parameters": {"classification": 5}}]}).encode()
    return header + data, {HEADER_LENGTH: str(len(header)), "content-type": "application/octet-stream"}


class Server:
    def __init__(self, weights: Path, args, max_batch: int) -> None:
        command = [sys.executable, "-m", "alexnet", "serve", f"m={weights}", "--host", "127.0.0.1", "--port", "0",
                   "--max-batch", str(max_batch), "--max-delay-ms", str(args.max_delay_ms), "--device", args.device,
                   "--precision", args.precision, "--timeout-s", "120"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        for line in self.process.stdout:
            found = re.match(r"serving at (http://127\.0\.0\.1:\d+)", line)
            if found:
                self.url = found[1]
                break
        else:
            raise SystemExit(f"alexnet serve exited {self.process.wait()}")
        while httpx.get(f"{self.url}/v2/health/ready").status_code != 200:
            time.sleep(0.2)

    def statistics(self) -> tuple[int, int]:
        stats = httpx.get(f"{self.url}/v2/models/m/stats").json()["model_stats"][0]
        return stats["inference_count"], stats["execution_count"]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(120)


async def load(url: str, body: bytes, headers: dict, requests: int, clients: int) -> tuple[float, np.ndarray, list]:
    """``requests`` requests from ``clients`` concurrent clients: (seconds, latencies in s, why each failure)."""
    latencies, failures, remaining = [], [], requests
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        async def one_client() -> None:
            nonlocal failures, remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                try:
                    response = await client.post("/v2/models/m/infer", content=body, headers=headers)
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                except httpx.HTTPError as error:
                    failures.append(f"{type(error).__name__} {error}")
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        seconds = time.perf_counter() - started
    return seconds, np.array(latencies), failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per server and client count")
    parser.add_argument("--clients", default="1,8,32", help="concurrent clients, comma-separated")
    parser.add_argument("--model", default="alexnet_owt")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--input", default="tensor", choices=("tensor", "files"))
    parser.add_argument("--max-batch", type=int, default=32, help="the batching server's")
    parser.add_argument("--max-delay-ms", type=float, default=5.0)
    args = parser.parse_args()
    clients = [int(count) for count in args.clients.split(",")]

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").exists() else platform.machine()
    gpu = f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""
    print(f"# {cpu}{gpu}, {os.cpu_count()} CPUs; Python {platform.python_version()}, torch {torch.__version__}")
    print(f"# {args.model}, {args.device}, precision {args.precision}, input {args.input}, {args.requests} requests "
          f"per round; batching: --max-batch {args.max_batch} --max-delay-ms {args.max_delay_ms:g}")
    with tempfile.TemporaryDirectory() as folder:
        weights = write_weights(Path(folder) / "weights.safetensors", args.model, args.precision)
        model_input = tuple(build_model(args.model).input_size)
        body, headers = request_body(args.input, model_input)
        servers = {"batching": Server(weights, args, args.max_batch), "max-batch 1": Server(weights, args, 1)}
        results = {}
        try:
            print(f"{'server':<12} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>6} {'mean batch':>10}")
            for count in clients:
                for name, server in servers.items():  # the two in turn at each load: drift hits both alike
                    asyncio.run(load(server.url, body, headers, max(2 * count, 20), count))  # unmeasured warm-up
                    images, batches = server.statistics()
                    seconds, latencies, failures = asyncio.run(load(server.url, body, headers, args.requests, count))
                    images_after, batches_after = server.statistics()
                    rate = args.requests / seconds
                    results[name, count] = rate
                    mean_batch = (images_after - images) / max(batches_after - batches, 1)
                    print(f"{name:<12} {count:>7} {rate:>8.1f} {np.percentile(latencies, 50) * 1000:>8.1f} "
                          f"{np.percentile(latencies, 99) * 1000:>8.1f} {len(failures):>6} {mean_batch:>10.1f}", flush=True)
                    for reason in sorted(set(failures)):
                        print(f"  failed: {failures.count(reason)} x {reason}", flush=True)
        finally:
            codes = {name: server.stop() for name, server in servers.items()}
        for count in clients:
            print(f"{count} clients: batching gives {results['batching', count] / results['max-batch 1', count]:.2f}x "
                  f"the requests/s of --max-batch 1")
        print(f"servers stopped by SIGTERM: exit {codes}")


if __name__ == "__main__":
    main()
