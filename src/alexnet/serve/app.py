"""The ASGI application: the page, the Open Inference Protocol's REST API, ``POST /predict``, and the
safety around them (bearer token, body limit, per-request timeout, errors as JSON, never a traceback)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import hmac
import json
import logging
from http.cookies import SimpleCookie
from importlib import resources
from typing import Annotated, Literal
from urllib.parse import parse_qs

import torch
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..errors import AlexNetError
from ..predict import Prediction
from .models import Limits, ServedModel, decode_files
from .protocol import HEADER_LENGTH, ProtocolError, infer_response, model_metadata, parse_infer_request

log = logging.getLogger("alexnet.serve")
EXPLAIN_METHODS = ("gradcam", "saliency")  # one backward pass each: occlusion and integrated gradients take
# tens of passes, and the model's thread would serve no batch meanwhile (``alexnet explain`` has them)
PUBLIC_PATHS = ("/v2/health/live", "/v2/health/ready")  # probes carry no token (the protocol's health API)
TOKEN_COOKIE = "alexnet_token"
STATIC = resources.files("alexnet.serve") / "static"


def build_app(models: list[ServedModel], *, limits: Limits = Limits(), token: str | None = None) -> FastAPI:
    """The server's application over ``models`` (their batchers start and stop with it)."""
    by_name = {model.name: model for model in models}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        for model in models:  # warm-up runs in each batcher's thread: /v2/health/live answers meanwhile
            model.batcher.start()
        yield
        for model in models:  # the server has answered every request it accepted; the queues are empty
            await run_in_threadpool(model.batcher.stop, limits.timeout_s)

    app = FastAPIOffline(
        title="alexnet serve", version="1", lifespan=lifespan, static_url="/static/docs",
        description="Trained AlexNet weights behind the Open Inference Protocol (KServe v2 / Triton HTTP) and a page. "
                    f"Models: {', '.join(by_name)}.")

    def model_named(name: str, version: str | None = None) -> ServedModel:
        if name not in by_name:
            raise ProtocolError(404, f"no model named {name!r}; this server has {', '.join(map(repr, by_name))}")
        if version not in (None, "1"):
            raise ProtocolError(404, f"model {name!r} has one version, \"1\"; got {version!r}")
        return by_name[name]

    async def within_timeout(work):
        try:
            return await asyncio.wait_for(work, limits.timeout_s)
        except asyncio.TimeoutError:
            raise ProtocolError(504, f"no answer within {limits.timeout_s:g} s (--timeout-s); the server is "
                                     f"overloaded, or --max-delay-ms is long") from None

    # --- the Open Inference Protocol ---------------------------------------------------------------

    @app.get("/v2", tags=["inference protocol"])
    async def server_metadata() -> dict:
        """Server metadata: name, version, extensions."""
        return {"name": "alexnet", "version": "1", "extensions": ["binary_tensor_data", "classification", "statistics"]}

    @app.get("/v2/health/live", tags=["inference protocol"])
    async def live() -> dict:
        """200 while the server runs."""
        return {"live": True}

    @app.get("/v2/health/ready", tags=["inference protocol"], responses={503: {"description": "warming up"}})
    async def ready() -> JSONResponse:
        """200 once every model is warmed up; 503 before."""
        ready = all(model.ready for model in models)
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.get("/v2/models/{name}", tags=["inference protocol"])
    @app.get("/v2/models/{name}/versions/{version}", tags=["inference protocol"], include_in_schema=False)
    async def metadata(name: str, version: str | None = None) -> dict:
        """The model's inputs (``images``: prepared FP32; ``image_files``: BYTES) and outputs."""
        model = model_named(name, version)
        return model_metadata(name, model.batcher.image_shape, model.trained.metadata.num_classes)

    @app.get("/v2/models/{name}/ready", tags=["inference protocol"], responses={503: {"description": "warming up"}})
    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["inference protocol"], include_in_schema=False)
    async def model_ready(name: str, version: str | None = None) -> JSONResponse:
        """200 once the model is warmed up; 503 before."""
        model = model_named(name, version)
        return JSONResponse({"name": name, "ready": model.ready}, status_code=200 if model.ready else 503)

    @app.get("/v2/models/{name}/stats", tags=["inference protocol"])
    async def statistics(name: str) -> dict:
        """Triton's statistics extension, in short: images inferred (``inference_count``), forward passes
        (``execution_count``; their ratio is the mean batch), and the images queued now."""
        batcher = model_named(name).batcher
        return {"model_stats": [{"name": name, "version": "1", "inference_count": batcher.images_run,
                                 "execution_count": batcher.batches_run, "queued_images": batcher.queued_images}]}

    @app.post("/v2/models/{name}/infer", tags=["inference protocol"], openapi_extra=INFER_DOCS)
    @app.post("/v2/models/{name}/versions/{version}/infer", tags=["inference protocol"], include_in_schema=False)
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        """Class probabilities and logits of a batch: prepared images (``images``, FP32 [B, C, H, W]) or
        image files (``image_files``, BYTES [B]) the server decodes and prepares as the weights were tested.
        JSON, or Triton's binary tensor extension; ``classification`` gives "probability:index:label"."""
        model = model_named(name, version)
        if request.headers.get("content-encoding", "identity") != "identity":
            raise ProtocolError(415, "send the request uncompressed (no Content-Encoding)")
        body = await request.body()
        metadata = model.trained.metadata
        header_length = request.headers.get(HEADER_LENGTH)
        arguments = (body, header_length, model.batcher.image_shape, metadata.num_classes)
        # JSON of many numbers takes a while to parse: in a thread, so that the event loop does not wait. A
        # binary request's JSON is a few hundred bytes and its tensors are read in place: at once, no thread hop.
        small_json = header_length is not None and header_length.isdigit() and int(header_length) <= 65536
        parsed = parse_infer_request(*arguments) if small_json else await run_in_threadpool(parse_infer_request, *arguments)
        count = len(parsed.tensor) if parsed.tensor is not None else len(parsed.files)
        if count > limits.max_images:
            raise ProtocolError(413, f"{count} images in one request; send at most {limits.max_images}")

        async def answer() -> torch.Tensor:
            if parsed.tensor is not None:
                images = torch.from_numpy(parsed.tensor)
            else:
                names = [f"image_files[{index}]" for index in range(len(parsed.files))]
                images = await run_in_threadpool(model.prepare_files, parsed.files, names, limits.max_pixels)
            return await model.logits(images)

        logits = await within_timeout(answer())
        content, headers = infer_response(name, parsed, logits.softmax(-1).numpy(), logits.numpy(),
                                          metadata.class_names)
        return Response(content, headers=headers)

    # --- plain HTTP: curl and the page -------------------------------------------------------------

    @app.post("/predict", tags=["plain"])
    async def predict(
        files: Annotated[list[UploadFile], File(description="image files (JPEG, PNG, WebP, GIF, BMP, TIFF)")],
        model: Annotated[str | None, Query(description="a model's name (default: the only one)")] = None,
        top_k: Annotated[int, Query(ge=1, le=1000, description="classes per image")] = 5,
    ) -> list[dict]:
        """The top-k classes of each uploaded image, as ``alexnet predict --json`` prints them:
        ``curl -F files=@shirt.png http://127.0.0.1:8000/predict``."""
        if model is None and len(models) > 1:
            raise ProtocolError(400, f"this server has several models; choose one with ?model= "
                                     f"({', '.join(by_name)})")
        served = model_named(model) if model is not None else models[0]
        if len(files) > limits.max_images:
            raise ProtocolError(413, f"{len(files)} images in one request; send at most {limits.max_images}")
        names = [upload.filename or f"file {index + 1}" for index, upload in enumerate(files)]

        async def answer() -> torch.Tensor:
            contents = [await upload.read() for upload in files]
            images = await run_in_threadpool(served.prepare_files, contents, names, limits.max_pixels)
            return await served.logits(images)

        probabilities = (await within_timeout(answer())).softmax(-1)
        class_names = served.trained.metadata.class_names
        top, indices = probabilities.topk(min(top_k, len(class_names)), dim=-1)
        return [Prediction(name, tuple(class_names[index] for index in row_indices), tuple(row), tuple(row_indices))
                .to_dict() for name, row, row_indices in zip(names, top.tolist(), indices.tolist())]

    @app.post("/explain", tags=["plain"])
    async def explain(
        file: Annotated[UploadFile, File(description="one image file (JPEG, PNG, WebP, GIF, BMP, TIFF)")],
        model: Annotated[str | None, Query(description="a model's name (default: the only one)")] = None,
        layer: Annotated[str | None, Query(pattern=r"^conv[1-9]$",
                                           description="Grad-CAM's layer, conv1..conv5 (default: the last)")] = None,
        method: Annotated[Literal[EXPLAIN_METHODS], Query(description="the attribution method")] = "gradcam",
    ) -> dict:
        """Why the image got its class, as ``alexnet explain`` computes it: the predicted class, its
        probability, and the attribution map laid over the image the network saw (its centre view) as
        a PNG data URL: ``curl -F file=@shirt.png http://127.0.0.1:8000/explain``. The map is computed
        in fp32 on the model's thread between batches."""
        if model is None and len(models) > 1:
            raise ProtocolError(400, f"this server has several models; choose one with ?model= "
                                     f"({', '.join(by_name)})")
        served = model_named(model) if model is not None else models[0]
        name = file.filename or "file 1"

        async def answer() -> dict:
            content = await file.read()
            image = (await run_in_threadpool(decode_files, [content], [name], limits.max_pixels))[0]
            explained = await served.explain(image, method, layer)
            return dict(explained.to_dict(), source=name,
                        overlay=await run_in_threadpool(overlay_data_url, explained))

        return await within_timeout(answer())

    @app.get("/models", tags=["plain"])
    async def model_cards() -> list[dict]:
        """The model card of every model: architecture, parameters, test metrics, preprocessing."""
        return [dict(model.card(), ready=model.ready) for model in models]

    @app.get("/models/{name}/architecture.png", tags=["plain"], response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    async def architecture(name: str) -> Response:
        """The picture of the network (``alexnet summary --plot``)."""
        model = model_named(name)
        return Response(await run_in_threadpool(model.architecture_png), media_type="image/png",
                        headers={"cache-control": "max-age=3600"})

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text())

    app.mount("/static/page", StaticFiles(directory=str(STATIC)), name="page")

    # --- errors: the protocol's {"error": ...} JSON, a 4xx where the client can act ----------------

    @app.exception_handler(ProtocolError)
    async def protocol_error(request: Request, error: ProtocolError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(AlexNetError)
    async def alexnet_error(request: Request, error: AlexNetError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, problem.get('loc', ())))}: {problem.get('msg')}"
                             for problem in error.errors())
        return JSONResponse({"error": f"invalid request ({problems[:300]})"}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)  # the traceback stays in the server's log
        return JSONResponse({"error": f"internal error ({type(error).__name__}); the server's log has the details"},
                            status_code=500)

    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if token:
        app.add_middleware(BearerToken, token=token)
    return app


def overlay_data_url(explained) -> str:
    """The explanation's overlay (``explain.pictures.overlay``: the map over the image) as a PNG data URL."""
    from PIL import Image

    from ..explain.pictures import overlay

    pixels = (overlay(explained.image, explained.attribution, explained.method) * 255).round().astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


INFER_DOCS = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
        "inputs": {"type": "array", "maxItems": 1, "items": {"type": "object", "properties": {
            "name": {"type": "string", "enum": ["images", "image_files"]},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "datatype": {"type": "string", "enum": ["FP32", "BYTES"]},
            "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer"}}},
            "data": {"type": "array", "description": "numbers (FP32), or each file's base64 text (BYTES)"}}}},
        "outputs": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string", "enum": ["probabilities", "logits"]},
            "parameters": {"type": "object", "properties": {
                "binary_data": {"type": "boolean"}, "classification": {"type": "integer"}}}}}}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                 "description": "Triton's binary extension: JSON of Inference-Header-Content-"
                                                "Length bytes, then the tensors"}}}}


class BodyLimit:
    """Refuses a request body over ``max_bytes`` with 413, before the application reads it: by its
    Content-Length when given, else by counting (the body is read here, at most ``max_bytes``)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _refuse(send, 413, self._message(declared.decode("latin-1")[:20]))
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _refuse(send, 413, self._message(f"over {size:,}"))
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)

    def _message(self, size: str) -> str:
        return f"the request body ({size} bytes) is over the limit of {self.max_bytes:,} bytes (--max-body-mb)"


class BearerToken:
    """Every route but the health probes needs ``Authorization: Bearer TOKEN``; a browser opens the
    page once as ``/?token=TOKEN``, which sets a same-site, HTTP-only cookie its requests then carry."""

    def __init__(self, app, token: str) -> None:
        self.app, self.token = app, token.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        scheme, _, given = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        cookie = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1")).get(TOKEN_COOKIE)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        if scheme.lower() == "bearer" and self._matches(given):
            return await self.app(scope, receive, send)
        if cookie is not None and self._matches(cookie.value):
            return await self.app(scope, receive, send)
        if scope["path"] == "/" and query and self._matches(query):  # the page's link: remember the token
            async def send_with_cookie(message):
                if message["type"] == "http.response.start":
                    value = f"{TOKEN_COOKIE}={query}; Path=/; HttpOnly; SameSite=Strict"
                    message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", value.encode())]}
                await send(message)

            return await self.app(scope, receive, send_with_cookie)
        await _refuse(send, 401, "a bearer token is required: send the header \"Authorization: Bearer TOKEN\", "
                                 "or open the page as /?token=TOKEN", {b"www-authenticate": b"Bearer"})

    def _matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.token)


async def _refuse(send, status: int, message: str, headers: dict | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *(headers or {}).items()]})
    await send({"type": "http.response.body", "body": body})
