"""alexnet serve: a real inference client (NVIDIA's tritonclient), a real browser (Chromium driven by
Playwright), the batcher, and a test per safety rule, against servers started as `alexnet serve` is."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import alexnet
from alexnet.cli import main
from alexnet.data.images import decode
from alexnet.errors import AlexNetError
from alexnet.inference import open_trained
from alexnet.models import build_model
from alexnet.predict import predict
from alexnet.serve.batching import DynamicBatcher
from alexnet.serve.protocol import ProtocolError, deserialize_bytes, parse_infer_request, serialize_bytes
from alexnet.weights import WeightsMetadata, save_weights
from test_robustness_data import write_png  # tests/ is on the path (pytest's prepend import mode)

tritonclient_http = pytest.importorskip("tritonclient.http")

DATA = Path(__file__).parent / "data"
FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
SOURCE = Path(alexnet.__file__).parents[1]  # the checkout the server subprocesses import


def write_weights(path: Path, *, views: str = "mirror", crop_fraction: float = 0.875, seed: int = 0) -> Path:
    """Untrained alexnet_small28 weights with Fashion-MNIST's metadata: shorter side to 32, a 28x28
    centre crop, image and mirror averaged; what they predict is arbitrary but fixed."""
    torch.manual_seed(seed)
    metadata = WeightsMetadata(model="alexnet_small28", model_options={}, class_names=FASHION_CLASSES,
                               input_size=(1, 28, 28), mean=(0.286,), std=(0.353,), dataset="fashion-mnist",
                               precision="fp32", test_views={"crop_fraction": crop_fraction, "views": views})
    return save_weights(path, build_model("alexnet_small28").eval(), metadata)


def fashion_test_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    images = np.frombuffer(gzip.open(FASHION / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
    labels = np.frombuffer(gzip.open(FASHION / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    return images.reshape(-1, 28, 28)[:count], labels[:count]


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


class Server:
    """``alexnet serve ARGS --port 0`` in a subprocess, its address read from what it prints."""

    def __init__(self, *arguments: str, env: dict | None = None, wait_ready: bool = True) -> None:
        environment = {**os.environ, "PYTHONPATH": str(SOURCE), **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "alexnet", "serve", *arguments, "--port", "0"], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=environment)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.url = self._wait_for_address()
        if wait_ready:
            self.wait_ready()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                if self.process.poll() is not None:
                    raise AssertionError(f"alexnet serve exited {self.process.returncode}: {self.process.stderr.read()}")
                continue
            found = re.match(r"serving at (http://\S+)", line)
            if found:
                return found[1]
        raise AssertionError("alexnet serve printed no address in 120 s")

    def wait_ready(self, headers: dict | None = None) -> None:
        deadline = time.monotonic() + 120
        while httpx.get(f"{self.url}/v2/health/ready", headers=headers).status_code != 200:
            assert time.monotonic() < deadline, "the server never turned ready"
            time.sleep(0.2)

    @property
    def host_port(self) -> str:
        return self.url.removeprefix("http://")

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.reader.join(timeout)  # the output read to its end, then the pipes closed (no ResourceWarning)
        self.process.stdout.close()
        self.process.stderr.close()
        return code


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_weights(tmp_path_factory.mktemp("weights") / "fashion.safetensors")


@pytest.fixture(scope="module")
def server(weights):
    running = Server(f"fm={weights}", "--max-delay-ms", "20")
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> list[Path]:
    """Images as users have them: a 28x28 grey PNG, a colour photo (PNG), a WebP and a JPEG."""
    folder = tmp_path_factory.mktemp("images")
    grey = folder / "grey.png"
    Image.fromarray(np.tile(np.arange(0, 252, 9, dtype=np.uint8), (28, 1))).save(grey)
    return [grey, DATA / "chelsea.png", DATA / "coffee.webp", DATA / "rocket.jpg"]


def predicted_probabilities(weights: Path, files: list[Path]) -> np.ndarray:
    """``alexnet predict``'s probabilities of every class, in class order, with fp32 pinned."""
    rows = []
    for prediction in predict(weights, files, top_k=len(FASHION_CLASSES), device="cpu", precision="fp32"):
        row = np.zeros(len(FASHION_CLASSES), np.float32)
        row[list(prediction.indices)] = prediction.probabilities
        rows.append(row)
    return np.stack(rows)


# --- a real client: NVIDIA's tritonclient -------------------------------------------------------------


def test_triton_client_reads_metadata_and_readiness(server):
    client = tritonclient_http.InferenceServerClient(server.host_port)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("fm")
    metadata = client.get_model_metadata("fm")
    assert metadata["name"] == "fm" and metadata["versions"] == ["1"]
    assert {tensor["name"]: tensor["shape"] for tensor in metadata["inputs"]} == {
        "images": [-1, 1, 28, 28], "image_files": [-1]}
    assert {tensor["name"]: tensor["shape"] for tensor in metadata["outputs"]} == {
        "probabilities": [-1, 10], "logits": [-1, 10]}
    assert not client.is_model_ready("no-such-model")
    with pytest.raises(tritonclient_http.InferenceServerException, match="no model named 'other'"):
        client.get_model_metadata("other")


def test_triton_client_bytes_input_equals_predict(server, weights, image_files):
    client = tritonclient_http.InferenceServerClient(server.host_port)
    files = tritonclient_http.InferInput("image_files", [len(image_files)], "BYTES")
    files.set_data_from_numpy(np.array([path.read_bytes() for path in image_files], dtype=np.object_))
    outputs = [tritonclient_http.InferRequestedOutput("probabilities"),
               tritonclient_http.InferRequestedOutput("logits", binary_data=False)]
    result = client.infer("fm", [files], outputs=outputs)
    expected = predicted_probabilities(weights, image_files)
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (4, 10)
    np.testing.assert_allclose(probabilities, expected, atol=2e-6)
    np.testing.assert_allclose(torch.from_numpy(result.as_numpy("logits")).softmax(-1), expected, atol=2e-6)
    # Triton's classification extension: "probability:index:label", most probable first
    top = client.infer("fm", [files], outputs=[tritonclient_http.InferRequestedOutput("probabilities", class_count=3)])
    labels = top.as_numpy("probabilities")
    assert labels.shape == (4, 3)
    for row, wanted in zip(labels, expected):
        value, index, label = row[0].decode().split(":", 2)
        assert int(index) == wanted.argmax() and label == FASHION_CLASSES[int(index)]
        assert float(value) == pytest.approx(wanted.max(), abs=1e-5)


def test_triton_client_tensor_input_equals_predict(server, weights, image_files):
    trained = open_trained(weights, device="cpu", precision="fp32")
    prepared = torch.stack([trained.preprocess(decode(str(path))) for path in image_files]).numpy()
    client = tritonclient_http.InferenceServerClient(server.host_port)
    expected = predicted_probabilities(weights, image_files)
    for binary in (True, False):  # Triton's binary extension, and plain JSON
        tensor = tritonclient_http.InferInput("images", list(prepared.shape), "FP32")
        tensor.set_data_from_numpy(prepared, binary_data=binary)
        result = client.infer("fm", [tensor], outputs=[
            tritonclient_http.InferRequestedOutput("probabilities", binary_data=binary)])
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=2e-6)


def test_triton_client_errors_are_the_protocols_4xx(server):
    client = tritonclient_http.InferenceServerClient(server.host_port)
    wrong_shape = tritonclient_http.InferInput("images", [1, 3, 28, 28], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, 3, 28, 28), np.float32))
    with pytest.raises(tritonclient_http.InferenceServerException, match=r"\[400\].*shape \[B,1,28,28\]"):
        client.infer("fm", [wrong_shape])
    wrong_type = tritonclient_http.InferInput("images", [1, 1, 28, 28], "FP64")
    wrong_type.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float64))
    with pytest.raises(tritonclient_http.InferenceServerException, match=r"\[400\].*must be FP32, got 'FP64'"):
        client.infer("fm", [wrong_type])
    garbage = tritonclient_http.InferInput("image_files", [1], "BYTES")
    garbage.set_data_from_numpy(np.array([os.urandom(300)], dtype=np.object_))
    with pytest.raises(tritonclient_http.InferenceServerException, match=r"\[422\].*not an image file"):
        client.infer("fm", [garbage])


# --- plain HTTP --------------------------------------------------------------------------------------


def test_predict_route_answers_as_predict_json(server, weights, image_files, capsys):
    uploads = [("files", (path.name, path.read_bytes())) for path in image_files]
    response = httpx.post(f"{server.url}/predict", params={"top_k": 3}, files=uploads, timeout=60)
    assert response.status_code == 200, response.text
    assert main(["predict", str(weights), *map(str, image_files), "--json", "--top-k", "3",
                 "--precision", "fp32", "--device", "cpu"]) == 0
    expected = json.loads(capsys.readouterr().out)
    answered = response.json()
    assert [item["source"] for item in answered] == [path.name for path in image_files]
    for got, wanted in zip(answered, expected):
        assert [p["class"] for p in got["predictions"]] == [p["class"] for p in wanted["predictions"]]
        assert [p["probability"] for p in got["predictions"]] == pytest.approx(
            [p["probability"] for p in wanted["predictions"]], abs=2e-6)


def test_json_bytes_input_takes_base64_files(server, weights, image_files):
    body = {"inputs": [{"name": "image_files", "datatype": "BYTES", "shape": [2],
                        "data": [base64.b64encode(path.read_bytes()).decode() for path in image_files[:2]]}],
            "outputs": [{"name": "probabilities"}]}
    response = httpx.post(f"{server.url}/v2/models/fm/versions/1/infer", json=body, timeout=60)
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    assert output["shape"] == [2, 10]
    np.testing.assert_allclose(np.array(output["data"]).reshape(2, 10),
                               predicted_probabilities(weights, image_files[:2]), atol=2e-6)


def test_page_docs_and_model_card_are_served_with_nothing_from_outside(server):
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "<title>alexnet serve</title>" in page.text
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert asset.startswith("/"), f"the page loads {asset} from outside the server"
        assert httpx.get(f"{server.url}{asset}").status_code == 200
    docs = httpx.get(f"{server.url}/docs").text
    assert "http" not in "".join(re.findall(r'(?:src|href)="([^"]+)"', docs)), "the API docs load from a CDN"
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v2/models/{name}/infer", "/predict", "/v2/health/ready"} <= set(schema["paths"])
    card = httpx.get(f"{server.url}/models").json()[0]
    assert card["name"] == "fm" and card["model"] == "alexnet_small28" and card["ready"]
    assert card["parameters"] == sum(p.numel() for p in build_model("alexnet_small28").parameters())
    assert card["preprocessing"]["resize_shorter_side"] == 32 and card["preprocessing"]["crop"] == [28, 28]
    picture = httpx.get(f"{server.url}/models/fm/architecture.png", timeout=60)
    assert picture.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(picture.content)) as image:
        assert image.format == "PNG" and image.width > 500


def test_explain_route_overlays_the_class_predict_gives(server, image_files):
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert "/explain" in schema["paths"]
    for path in image_files:
        predicted = httpx.post(f"{server.url}/predict", files={"files": (path.name, path.read_bytes())}, timeout=60)
        explained = httpx.post(f"{server.url}/explain", files={"file": (path.name, path.read_bytes())}, timeout=60)
        assert explained.status_code == 200, explained.text
        answer, top = explained.json(), predicted.json()[0]["predictions"][0]
        assert (answer["class"], answer["method"], answer["layer"], answer["source"]) == (
            top["class"], "gradcam", "conv5", path.name)
        assert answer["probability"] == pytest.approx(top["probability"], abs=2e-6)
        prefix = "data:image/png;base64,"
        assert answer["overlay"].startswith(prefix)
        with Image.open(io.BytesIO(base64.b64decode(answer["overlay"][len(prefix):]))) as overlay:
            assert overlay.format == "PNG" and overlay.size == (28, 28) and overlay.mode == "RGB"
            assert len(np.unique(np.asarray(overlay).reshape(-1, 3), axis=0)) > 1  # a map over the image, not blank
    saliency = httpx.post(f"{server.url}/explain", params={"method": "saliency"},
                          files={"file": (image_files[1].name, image_files[1].read_bytes())}, timeout=60)
    assert saliency.status_code == 200 and saliency.json()["layer"] is None


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_explain_runs_between_batches_and_leaves_the_batchers_model_as_it_was(weights, image_files, precision):
    import asyncio

    from alexnet.serve.models import decode_files, open_models

    try:
        served = open_models([f"fm={weights}"], device="cpu", precision=precision)[0]
    except AlexNetError as error:
        pytest.skip(f"no {precision} here: {error}")
    model = served.trained.model

    def state() -> tuple:
        return (model.training, [module.inplace for module in model.modules() if hasattr(module, "inplace")],
                [(p.dtype, p.requires_grad) for p in model.parameters()],
                sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()))

    images = served.prepare_files([path.read_bytes() for path in image_files], ["a", "b", "c", "d"], 10**7)
    served.batcher.start()
    assert served.batcher.ready.wait(60)
    try:
        before, inside = served.batcher.submit(images).result(30), served.batcher.run_job(state).result(30)
        image = decode_files([image_files[1].read_bytes()], ["chelsea.png"], 10**7)[0]
        explained = asyncio.run(served.explain(image, "gradcam", None))
        assert np.isfinite(explained.attribution).all() and explained.attribution.max() > 0
        assert ("bf16" in explained.note) == (precision == "bf16")  # attributed in fp32 even so
        torch.testing.assert_close(served.batcher.submit(images).result(30), before, atol=0, rtol=0)
        assert served.batcher.run_job(state).result(30) == inside
    finally:
        served.batcher.stop(30)
    assert inside[-1] == 0 and not inside[0]  # jobs see the model in eval mode, with no hook left


# --- the batcher -------------------------------------------------------------------------------------


def test_concurrent_requests_share_forward_passes_and_equal_single_runs(weights):
    trained = open_trained(weights, device="cpu", precision="fp32")
    images = torch.rand(10, 1, 28, 28)
    with trained.running():
        alone = torch.cat([trained.logits(image[None].contiguous(memory_format=torch.channels_last))
                           for image in images])
    batcher = DynamicBatcher(trained, max_batch=4, max_delay_s=1.0)
    batcher.start()
    assert batcher.ready.wait(60)
    with ThreadPoolExecutor(10) as pool:  # ten requests at once: 4 + 4 + 2 images, three forward passes
        futures = list(pool.map(lambda image: batcher.submit(image[None]), images))
        results = torch.cat([future.result(30) for future in futures])
    batcher.stop(30)
    assert batcher.batches_run == 3 and batcher.images_run == 10  # warm-up passes are not counted
    torch.testing.assert_close(results, alone, atol=1e-5, rtol=0)


def test_a_request_larger_than_a_batch_is_split_and_stop_answers_the_queue(weights):
    trained = open_trained(weights, device="cpu", precision="fp32")
    batcher = DynamicBatcher(trained, max_batch=4, max_delay_s=5.0)
    batcher.start()
    assert batcher.ready.wait(60)
    large, small = batcher.submit(torch.rand(9, 1, 28, 28)), batcher.submit(torch.rand(1, 1, 28, 28))
    batcher.stop(30)  # does not wait out the 5 s delay: stopping runs what is queued at once
    assert large.result(0).shape == (9, 10) and small.result(0).shape == (1, 10)
    with pytest.raises(AlexNetError, match="shutting down"):
        batcher.submit(torch.rand(1, 1, 28, 28))


def test_batcher_limits_are_checked(weights):
    trained = open_trained(weights, device="cpu", precision="fp32")
    with pytest.raises(AlexNetError, match="--max-batch must be at least 1"):
        DynamicBatcher(trained, max_batch=0)
    with pytest.raises(AlexNetError, match="--max-delay-ms must be between 0 and 10000"):
        DynamicBatcher(trained, max_delay_s=-0.001)


def test_ready_waits_for_the_warm_up_and_live_does_not(weights):
    import asyncio

    from alexnet.serve import open_models
    from alexnet.serve.app import build_app

    models = open_models([f"fm={weights}"], device="cpu", precision="fp32")
    batcher = models[0].batcher

    async def probe() -> dict[str, int]:
        # the application in process, its startup not run: the batcher starts (and warms up) here
        transport = httpx.ASGITransport(app=build_app(models))
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            statuses = {path: (await client.get(path)).status_code
                        for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/fm/ready")}
            batcher.start()
            await asyncio.to_thread(batcher.ready.wait, 60)
            statuses["ready after warm-up"] = (await client.get("/v2/health/ready")).status_code
        return statuses

    assert asyncio.run(probe()) == {"/v2/health/live": 200, "/v2/health/ready": 503, "/v2/models/fm/ready": 503,
                                    "ready after warm-up": 200}
    assert batcher.batches_run == 0  # the warm-up passes ran, uncounted
    batcher.stop(30)


# --- the protocol's parsing ----------------------------------------------------------------------------


def test_bytes_tensors_round_trip_and_truncation_is_refused():
    elements = [b"", b"abc", bytes(range(256))]
    assert deserialize_bytes(serialize_bytes(elements)) == elements
    with pytest.raises(ProtocolError, match="declares 256 bytes; 10 are left"):
        deserialize_bytes(serialize_bytes(elements)[:-246])
    with pytest.raises(ProtocolError, match="inside an element's 4-byte length"):
        deserialize_bytes(b"\x01\x00")


@pytest.mark.parametrize("body, header, message", [
    (b"[1, 2]", None, "must be a JSON object"),
    (b'{"inputs": []}', None, "exactly one input"),
    (b'{"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 2, 2], "data": [1, 2, 3]}]}', None,
     "needs 4 numbers, got 3"),
    (b'{"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 2, 2], "data": [1, 2, 3, NaN]}]}', None,
     "NaN or infinite"),
    (b'{"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 2, 2], "data": ["a", 2, 3, 4]}]}', None,
     "numbers only"),
    (b'{"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1], "data": [1]}]}', None, "unknown input 'pixels'"),
    (b'{"inputs": [{"name": "image_files", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]}', None, "base64"),
    (b'{"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 2, 2], "parameters": {"binary_data_size": 16}}]}xx',
     "json", "binary_data_size 16 does not fit the 2 bytes"),
    (b'{}', "999", "within the body's 2 bytes"),
    (b'{"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 2, 2], "data": [1, 2, 3, 4]}],'
     b' "outputs": [{"name": "softmax"}]}', None, "unknown output 'softmax'"),
    (b'[' * 100_000, None, "not valid JSON"),
])
def test_malformed_requests_get_a_message_and_400(body, header, message):
    header = str(body.rindex(b"}") + 1) if header == "json" else header  # the JSON's length, binary after it
    with pytest.raises(ProtocolError, match=re.escape(message)) as raised:
        parse_infer_request(body, header, (1, 2, 2), 10)
    assert raised.value.status == 400


# --- safety: a test per rule, against a running server --------------------------------------------------


@pytest.fixture(scope="module")
def guarded(weights):
    """A server with a token, small limits and a short timeout."""
    running = Server(f"fm={weights}", "--max-body-mb", "1", "--max-pixels", "1000000", "--timeout-s", "20",
                     env={"ALEXNET_SERVE_TOKEN": "s3cret-token"})
    yield running
    assert running.stop() == 0


AUTH = {"Authorization": "Bearer s3cret-token"}


def test_token_guards_every_route_but_health(guarded):
    assert httpx.get(f"{guarded.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{guarded.url}/v2/health/ready").status_code == 200
    for path in ("/", "/v2", "/v2/models/fm", "/v2/models/fm/ready", "/models", "/docs", "/openapi.json",
                 "/static/page/page.js"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            refused = httpx.get(f"{guarded.url}{path}", headers=headers)
            assert refused.status_code == 401, path
            assert "bearer token is required" in refused.json()["error"]
            assert refused.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{guarded.url}{path}", headers=AUTH).status_code == 200, path
    refused = httpx.post(f"{guarded.url}/predict", files={"files": ("a.png", b"x")})
    assert refused.status_code == 401
    refused = httpx.post(f"{guarded.url}/explain", files={"file": ("a.png", b"x")})
    assert refused.status_code == 401 and "bearer token is required" in refused.json()["error"]
    # the page's link: ?token= sets a cookie, which the page's own requests then carry
    with httpx.Client(base_url=guarded.url) as browser:
        assert browser.get("/", params={"token": "wrong"}).status_code == 401
        opened = browser.get("/", params={"token": "s3cret-token"})
        assert opened.status_code == 200 and "HttpOnly; SameSite=Strict" in opened.headers["set-cookie"]
        assert browser.get("/models").status_code == 200


def test_oversized_body_is_refused_with_413_unread(guarded):
    big = os.urandom(2 * 2**20)
    declared = httpx.post(f"{guarded.url}/predict", headers=AUTH, files={"files": ("big.png", big)})
    assert declared.status_code == 413 and "over the limit of 1,048,576 bytes" in declared.json()["error"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield bytes(64 * 1024)

    streamed = httpx.post(f"{guarded.url}/v2/models/fm/infer", headers=AUTH, content=chunks())
    assert streamed.status_code == 413 and "over the limit" in streamed.json()["error"]


def test_decompression_bomb_is_refused_from_its_header(guarded, tmp_path):
    bomb = tmp_path / "bomb.png"
    write_png(bomb, 30_000, 30_000, bit_depth=1, colour_type=0, row=bytes(30_000 // 8))
    assert bomb.stat().st_size < 1_000_000  # under the body limit: the pixel limit must stop it
    response = httpx.post(f"{guarded.url}/predict", headers=AUTH, files={"files": ("bomb.png", bomb.read_bytes())})
    assert response.status_code == 413
    assert response.json()["error"] == ("bomb.png: 900,000,000 pixels is over the limit of 1,000,000 (pixels an "
                                        "image may have); shrink it")
    body = serialize_bytes([bomb.read_bytes()])
    header = json.dumps({"inputs": [{"name": "image_files", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": len(body)}}]}).encode()
    response = httpx.post(f"{guarded.url}/v2/models/fm/infer", content=header + body,
                          headers={**AUTH, "Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 413 and "900,000,000 pixels" in response.json()["error"]
    response = httpx.post(f"{guarded.url}/explain", headers=AUTH, files={"file": ("bomb.png", bomb.read_bytes())})
    assert response.status_code == 413 and "900,000,000 pixels" in response.json()["error"]


def test_garbage_truncated_and_malformed_requests_get_4xx_json_never_a_traceback(guarded, image_files, tmp_path):
    photo = image_files[1].read_bytes()
    truncated = photo[:photo.index(b"IDAT") + 3000]  # a PNG cut short: header whole, pixels missing
    cases = [
        ("/predict", {"files": {"files": ("noise.jpg", os.urandom(5000))}}, 422, "noise.jpg is not an image file"),
        ("/predict", {"files": {"files": ("cut.png", truncated)}}, 422, "cut.png: cannot decode this PNG"),
        ("/predict", {"files": {"other": ("a.png", b"x")}}, 422, "invalid request"),
        ("/predict?top_k=0", {"files": {"files": ("a.png", b"x")}}, 422, "invalid request"),
        ("/predict?model=nope", {"files": {"files": ("a.png", b"x")}}, 404, "no model named 'nope'"),
        ("/explain", {"files": {"file": ("noise.jpg", os.urandom(5000))}}, 422, "noise.jpg is not an image file"),
        ("/explain", {"files": {"file": ("cut.png", truncated)}}, 422, "cut.png: cannot decode this PNG"),
        ("/explain?method=occlusion", {"files": {"file": ("a.png", b"x")}}, 422, "invalid request"),
        ("/explain?layer=conv7", {"files": {"file": ("a.png", photo)}}, 400, "unknown layer 'conv7'"),
        ("/explain?model=nope", {"files": {"file": ("a.png", b"x")}}, 404, "no model named 'nope'"),
        ("/v2/models/fm/infer", {"content": b"{not json"}, 400, "not valid JSON"),
        ("/v2/models/fm/infer", {"content": b"\xff\xfe\x00"}, 400, "not valid JSON"),
        ("/v2/models/nope/infer", {"content": b"{}"}, 404, "no model named 'nope'"),
        ("/v2/models/fm/versions/7/infer", {"content": b"{}"}, 404, "one version"),
        ("/v2/models/fm/infer", {"content": b"{}", "headers": {"Content-Encoding": "gzip"}}, 415, "uncompressed"),
    ]
    for path, request, status, message in cases:
        response = httpx.post(f"{guarded.url}{path}", **{**request, "headers": {**AUTH, **request.get("headers", {})}})
        assert response.status_code == status, (path, response.text)
        assert message in response.json()["error"], (path, response.text)
        assert "Traceback" not in response.text
    many = httpx.post(f"{guarded.url}/predict", headers=AUTH, files=[("files", ("a.png", b"x"))] * 65)
    assert many.status_code == 413 and "send at most 64" in many.json()["error"]
    assert httpx.get(f"{guarded.url}/nowhere", headers=AUTH).json() == {"error": "Not Found"}
    assert guarded.process.poll() is None  # still serving


def test_a_request_past_its_timeout_gets_504(weights):
    # a batch waits 3 s for company; the request may wait 0.5 s
    slow = Server(f"fm={weights}", "--max-delay-ms", "3000", "--timeout-s", "0.5")
    try:
        tensor = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": [0.0] * 784}]}
        started = time.monotonic()
        response = httpx.post(f"{slow.url}/v2/models/fm/infer", json=tensor, timeout=30)
        assert response.status_code == 504 and "no answer within 0.5 s" in response.json()["error"]
        assert time.monotonic() - started < 2.5
    finally:
        assert slow.stop() == 0


@pytest.mark.slow
def test_sigterm_mid_load_answers_every_accepted_request_then_exits_0(weights, image_files):
    # a batch waits up to 5 s for company, so the requests are all inside the server when SIGTERM comes
    running = Server(f"fm={weights}", "--max-delay-ms", "5000", "--max-batch", "64")
    body = {"inputs": [{"name": "image_files", "datatype": "BYTES", "shape": [1],
                        "data": [base64.b64encode(image_files[0].read_bytes()).decode()]}]}

    def request(_) -> int:
        with httpx.Client(timeout=60) as client:  # a connection each, as separate clients have
            return client.post(f"{running.url}/v2/models/fm/infer", json=body).status_code

    def queued() -> int:
        return httpx.get(f"{running.url}/v2/models/fm/stats").json()["model_stats"][0]["queued_images"]

    with ThreadPoolExecutor(24) as pool:
        answers = [pool.submit(request, index) for index in range(24)]
        deadline = time.monotonic() + 30
        while queued() < 24:  # all accepted, decoded, and waiting for their batch
            assert time.monotonic() < deadline, f"only {queued()} of 24 requests reached the queue"
            time.sleep(0.05)
        running.process.send_signal(signal.SIGTERM)
        statuses = [answer.result(60) for answer in answers]
    assert running.process.wait(60) == 0
    running.stop()  # exited already: stop() only closes the pipes, sending no second signal
    assert statuses == [200] * 24
    assert "every accepted request answered" in "".join(running.output)
    with pytest.raises(httpx.ConnectError):  # and nothing is accepted after
        httpx.get(f"{running.url}/v2/health/live")


# --- the command line ----------------------------------------------------------------------------------


def test_serve_command_errors_are_one_line(tmp_path, weights, capsys):
    assert main(["serve", str(tmp_path / "missing.safetensors"), "--port", "0"]) == 2
    assert capsys.readouterr().err.strip() == f"alexnet: error: no weights file at {tmp_path / 'missing.safetensors'}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(weights), "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["serve", f"a={weights}", f"a={weights}", "--port", "0"]) == 2
    assert "two models are named 'a'" in capsys.readouterr().err
    assert main(["serve", str(weights), "--port", "0", "--token", "short"]) == 2
    assert "the token must be at least 8 letters" in capsys.readouterr().err
    for flag, value in (("--timeout-s", "nan"), ("--max-body-mb", "0"), ("--max-body-mb", "inf"), ("--max-pixels", "-1")):
        assert main(["serve", str(weights), "--port", "0", flag, value]) == 2
        assert f"{flag} must be a positive number" in capsys.readouterr().err


def test_decode_reads_uploaded_bytes_as_it_reads_files(image_files, tmp_path):
    for path in image_files:
        torch.testing.assert_close(decode(path.read_bytes()), decode(str(path)), atol=0, rtol=0)
    bomb = tmp_path / "bomb.png"
    write_png(bomb, 30_000, 30_000, bit_depth=1, colour_type=0, row=bytes(30_000 // 8))
    with pytest.raises(ValueError, match=r"900,000,000 pixels is over the limit of 89,478,485 \(PIL"):
        decode(bomb.read_bytes())
    with pytest.raises(ValueError, match="over the limit of 1,000 .pixels an image may have"):
        decode(image_files[1].read_bytes(), max_pixels=1000)


def test_several_models_are_served_by_name(weights, tmp_path):
    other = write_weights(tmp_path / "other.safetensors", views="centre", crop_fraction=1.0, seed=1)
    running = Server(str(weights), str(other))
    try:
        cards = httpx.get(f"{running.url}/models").json()
        assert [card["name"] for card in cards] == ["fashion", "other"]
        image = ("files", ("grey.png", png_bytes(np.full((28, 28), 90, np.uint8))))
        ambiguous = httpx.post(f"{running.url}/predict", files=[image])
        assert ambiguous.status_code == 400 and "choose one with ?model=" in ambiguous.json()["error"]
        for name, path in (("fashion", weights), ("other", other)):
            answer = httpx.post(f"{running.url}/predict", params={"model": name}, files=[image], timeout=60).json()
            expected = predict(path, [torch.full((1, 28, 28), 90, dtype=torch.uint8)], device="cpu", precision="fp32")
            assert answer[0]["predictions"][0]["class"] == expected[0].classes[0]
            assert answer[0]["predictions"][0]["probability"] == pytest.approx(expected[0].probabilities[0], abs=2e-6)
    finally:
        assert running.stop() == 0


# --- a real browser -------------------------------------------------------------------------------------


def chromium() -> str | None:
    """Debian's chromium (browser downloads are not reachable here), or one named by $CHROMIUM."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One epoch of alexnet_small28 on 5% of Fashion-MNIST: it classifies many test images right."""
    if not FASHION.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    from alexnet.training import TrainConfig, train

    from fashion_small import fashion_small_test

    out = tmp_path_factory.mktemp("runs")
    # its final test on the first 1,000 test images: the weights are what the tests use
    train(TrainConfig(subset=0.05, val_size=500, epochs=1, precision="fp32", quiet=True, out=str(out), name="fm",
                      data_dir=fashion_small_test()))
    return out / "fm"


@pytest.mark.slow
def test_browser_uploads_a_fashion_mnist_image_and_sees_the_right_class(trained_run, tmp_path):
    executable = chromium()
    if executable is None:
        pytest.skip("no chromium: install Debian's chromium package (make test does where apt is available)")
    sync_api = pytest.importorskip("playwright.sync_api")
    images, labels = fashion_test_images(50)
    (tmp_path / "images").mkdir()
    files = []
    for index, (image, label) in enumerate(zip(images, labels)):
        path = tmp_path / "images" / f"test-{index}.png"
        path.write_bytes(png_bytes(image))
        files.append((path, FASHION_CLASSES[label]))
    # the first test image of a class the network gets right, as predict says; the page must say the same
    predictions = predict(trained_run, [path for path, _ in files], device="cpu", precision="fp32")
    chosen, truth = next((path, label) for (path, label), prediction in zip(files, predictions)
                         if prediction.classes[0] == label)
    running = Server(str(trained_run))
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, headless=True, args=BROWSER_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 800})
                outside = []
                page.on("request", lambda request: outside.append(request.url)
                        if not request.url.startswith((running.url, "blob:", "data:")) else None)
                page.goto(running.url)
                page.wait_for_selector("#card h2")
                assert page.inner_text("#card h2") == "fm"
                page.set_input_files("#files", str(chosen))
                page.wait_for_selector(".result .classes li:nth-child(5)")
                bars = page.locator(".result .classes li")
                assert bars.count() == 5
                assert page.inner_text(".result .classes li:first-child .label") == truth
                shares = [float(text.rstrip("%")) for text in page.locator(".result .probability").all_inner_texts()]
                assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100.5
                page.wait_for_function("document.querySelector('#card img').naturalWidth > 0")
                # the Grad-CAM overlay, asked for once the bars were shown, lands beside the image
                page.wait_for_function("document.querySelector('.result .views img.overlay')?.naturalWidth > 0")
                assert page.get_attribute(".result .views img.overlay", "alt").endswith(f"saw {truth}")
                page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
                page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than the screen
                assert page.evaluate("document.documentElement.scrollWidth") <= 390
                assert outside == []
            finally:
                browser.close()
    finally:
        assert running.stop() == 0
    with Image.open(tmp_path / "page.png") as screenshot:
        assert screenshot.width == 1100 and screenshot.height >= 800
