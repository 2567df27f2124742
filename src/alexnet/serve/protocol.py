"""The Open Inference Protocol's ("KServe v2", Triton's HTTP API) inference request and response,
with Triton's binary tensor data and classification extensions, which its standard clients use.

A request body is JSON, or (binary extension) JSON of ``Inference-Header-Content-Length`` bytes
followed by the raw tensors named in it (``parameters.binary_data_size``), in input order. BYTES
elements travel as a 4-byte little-endian length and the bytes, or in JSON as base64 text.
Everything here is pure: bytes in, typed values out, and ``ProtocolError`` (an HTTP status and the
message of the protocol's ``{"error": ...}`` body) for anything a client got wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass, field

import numpy as np

from ..errors import AlexNetError

HEADER_LENGTH = "Inference-Header-Content-Length"
TENSOR_INPUT = "images"  # (B, C, H, W) FP32, prepared as the weights were tested
FILES_INPUT = "image_files"  # (B,) BYTES, encoded image files the server decodes and prepares
OUTPUTS = ("probabilities", "logits")


class ProtocolError(AlexNetError):
    """A request the protocol refuses: ``status`` is the HTTP status, the message the error body's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool
    classification: int  # top classes as "probability:index:label" strings; 0: the tensor itself


@dataclass
class InferRequest:
    """One inference request, decoded: exactly one of ``tensor`` and ``files`` is set."""

    id: str | None
    tensor: np.ndarray | None = None  # float32 (B, C, H, W)
    files: list[bytes] = field(default_factory=list)
    outputs: list[RequestedOutput] = field(default_factory=list)


def parse_infer_request(body: bytes, header_length: str | None, image_shape: tuple[int, int, int],
                        num_classes: int) -> InferRequest:
    """Decode an inference request for a model taking prepared images of ``image_shape``."""
    json_part, binary_part = _split_body(body, header_length)
    try:
        request = json.loads(json_part)
    except (ValueError, RecursionError) as error:
        raise ProtocolError(400, f"the request is not valid JSON ({str(error)[:120]})") from None
    if not isinstance(request, dict):
        raise ProtocolError(400, "the request must be a JSON object with an \"inputs\" list")
    parameters = _object(request.get("parameters", {}), "parameters")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(400, f"give exactly one input: \"{TENSOR_INPUT}\" (FP32 [B,{','.join(map(str, image_shape))}]"
                                 f" prepared images) or \"{FILES_INPUT}\" (BYTES [B] image files)")
    request_id = request.get("id")
    result = InferRequest(id=str(request_id) if request_id is not None else None)
    result.outputs = _requested_outputs(request.get("outputs"), bool(parameters.get("binary_data_output")),
                                        num_classes)
    spec = inputs[0]
    name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(size, int) and not isinstance(size, bool) and size >= 0
                                               for size in shape):
        raise ProtocolError(400, f"input {name!r}: \"shape\" must be a list of non-negative integers")
    raw = _binary_data(_object(spec.get("parameters", {}), f"input {name!r} parameters"), binary_part, name)
    if raw is not None and len(raw) != len(binary_part):
        raise ProtocolError(400, f"the body holds {len(binary_part):,} bytes after the JSON, input {name!r} "
                                 f"declares {len(raw):,} (binary_data_size)")
    if name == TENSOR_INPUT:
        result.tensor = _tensor(spec, datatype, shape, raw, image_shape)
    elif name == FILES_INPUT:
        result.files = _files(spec, datatype, shape, raw)
    else:
        raise ProtocolError(400, f"unknown input {name!r}; this model takes {TENSOR_INPUT!r} or {FILES_INPUT!r}")
    return result


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 <= length <= len(body):
        raise ProtocolError(400, f"{HEADER_LENGTH} must be a length within the body's {len(body):,} bytes, "
                                 f"got {header_length[:40]!r}")
    return body[:length], body[length:]


def _object(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise ProtocolError(400, f"{what} must be a JSON object")
    return value


def _binary_data(parameters: dict, binary_part: bytes, name) -> bytes | None:
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or size > len(binary_part):
        raise ProtocolError(400, f"input {name!r}: binary_data_size {size!r} does not fit the "
                                 f"{len(binary_part):,} bytes after the JSON")
    return binary_part[:size]


def _tensor(spec: dict, datatype, shape: list[int], raw: bytes | None,
            image_shape: tuple[int, int, int]) -> np.ndarray:
    expected = ",".join(map(str, image_shape))
    if datatype != "FP32":
        raise ProtocolError(400, f"input {TENSOR_INPUT!r} must be FP32, got {datatype!r}")
    if len(shape) != 4 or tuple(shape[1:]) != image_shape or shape[0] < 1:
        raise ProtocolError(400, f"input {TENSOR_INPUT!r} must have shape [B,{expected}] (B at least 1), got {shape}")
    count = math.prod(shape)
    if raw is not None:
        if len(raw) != count * 4:
            raise ProtocolError(400, f"input {TENSOR_INPUT!r}: shape {shape} needs {count * 4:,} bytes of FP32, "
                                     f"got {len(raw):,}")
        values = np.frombuffer(raw, dtype="<f4")
    else:
        data = spec.get("data")
        if not isinstance(data, list):
            raise ProtocolError(400, f"input {TENSOR_INPUT!r}: give \"data\" (a list of numbers) or binary data")
        try:
            values = np.asarray(data, dtype=np.float32).reshape(-1)
        except (ValueError, TypeError):
            raise ProtocolError(400, f"input {TENSOR_INPUT!r}: \"data\" must hold numbers only") from None
        if values.size != count:
            raise ProtocolError(400, f"input {TENSOR_INPUT!r}: shape {shape} needs {count:,} numbers, "
                                     f"got {values.size:,}")
    if not np.isfinite(values).all():
        raise ProtocolError(400, f"input {TENSOR_INPUT!r} holds NaN or infinite values")
    return values.reshape(shape).astype(np.float32, copy=True)  # writable, as torch.from_numpy wants


def _files(spec: dict, datatype, shape: list[int], raw: bytes | None) -> list[bytes]:
    if datatype != "BYTES":
        raise ProtocolError(400, f"input {FILES_INPUT!r} must be BYTES, got {datatype!r}")
    if len(shape) not in (1, 2) or shape[0] < 1 or (len(shape) == 2 and shape[1] != 1):
        raise ProtocolError(400, f"input {FILES_INPUT!r} must have shape [B] or [B,1] (B at least 1), got {shape}")
    count = shape[0]
    if raw is not None:
        files = deserialize_bytes(raw)
    else:
        data = spec.get("data")
        if not isinstance(data, list):
            raise ProtocolError(400, f"input {FILES_INPUT!r}: give \"data\" (base64 text of each file) or binary data")
        flat = [item for row in data for item in (row if isinstance(row, list) else [row])]
        files = []
        for item in flat:
            try:
                files.append(base64.b64decode(item, validate=True) if isinstance(item, str) else None)
            except (binascii.Error, ValueError):
                files.append(None)
            if files[-1] is None:
                raise ProtocolError(400, f"input {FILES_INPUT!r}: in JSON each element is a file's base64 text")
    if len(files) != count:
        raise ProtocolError(400, f"input {FILES_INPUT!r}: shape {shape} declares {count} files, got {len(files)}")
    return files


def deserialize_bytes(raw: bytes) -> list[bytes]:
    """Triton's BYTES tensor encoding: each element a 4-byte little-endian length, then its bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ProtocolError(400, "BYTES data ends inside an element's 4-byte length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise ProtocolError(400, f"a BYTES element declares {length:,} bytes; {len(raw) - offset:,} are left")
        elements.append(raw[offset:offset + length])
        offset += length
    return elements


def serialize_bytes(elements: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def _requested_outputs(outputs, binary_default: bool, num_classes: int) -> list[RequestedOutput]:
    if outputs is None:
        return [RequestedOutput(name, binary_default, 0) for name in OUTPUTS]
    if not isinstance(outputs, list) or not outputs:
        raise ProtocolError(400, "\"outputs\" must be a non-empty list of {\"name\": ...} objects")
    requested = []
    for output in outputs:
        output = _object(output, "each output")
        name = output.get("name")
        if name not in OUTPUTS:
            raise ProtocolError(400, f"unknown output {name!r}; this model gives {', '.join(map(repr, OUTPUTS))}")
        parameters = _object(output.get("parameters", {}), f"output {name!r} parameters")
        classification = parameters.get("classification", 0)
        if not isinstance(classification, int) or isinstance(classification, bool) or classification < 0:
            raise ProtocolError(400, f"output {name!r}: classification must be a count of classes, got "
                                     f"{classification!r}")
        binary = parameters.get("binary_data", binary_default)
        requested.append(RequestedOutput(name, bool(binary), min(classification, num_classes)))
    return requested


def infer_response(model_name: str, request: InferRequest, probabilities: np.ndarray, logits: np.ndarray,
                   class_names: tuple[str, ...]) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: JSON, with the binary outputs after it where asked for."""
    tensors = {"probabilities": probabilities, "logits": logits}
    outputs, blobs = [], []
    for requested in request.outputs:
        values = tensors[requested.name]
        if requested.classification:
            labels = _classification(values, requested.classification, class_names)
            datatype, shape = "BYTES", [len(labels), requested.classification]
            flat = [label for row in labels for label in row]
            data, blob = flat, serialize_bytes([label.encode() for label in flat])
        else:
            datatype, shape = "FP32", list(values.shape)
            data, blob = values.reshape(-1).tolist(), values.astype("<f4").tobytes()
        output = {"name": requested.name, "datatype": datatype, "shape": shape}
        if requested.binary:
            output["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            output["data"] = data
        outputs.append(output)
    response = {"model_name": model_name, "model_version": "1", "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    header = json.dumps(response, separators=(",", ":")).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {"content-type": "application/octet-stream", HEADER_LENGTH.lower(): str(len(header))}


def _classification(values: np.ndarray, count: int, class_names: tuple[str, ...]) -> list[list[str]]:
    """Triton's classification extension: the top ``count`` classes of each row as "value:index:label"."""
    order = np.argsort(-values, axis=1, kind="stable")[:, :count]
    return [[f"{row[index]:f}:{index}:{class_names[index]}" for index in indices]
            for row, indices in zip(values, order)]


def model_metadata(name: str, image_shape: tuple[int, int, int], num_classes: int) -> dict:
    """``GET /v2/models/{name}``: the inputs and outputs, batch dimension -1."""
    return {
        "name": name, "versions": ["1"], "platform": "pytorch",
        "inputs": [{"name": TENSOR_INPUT, "datatype": "FP32", "shape": [-1, *image_shape]},
                   {"name": FILES_INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": output, "datatype": "FP32", "shape": [-1, num_classes]} for output in OUTPUTS],
    }
