"""Trained networks as files other programs run: ONNX, TorchScript and ``torch.export`` (.pt2).

Each file carries the weights' metadata (model, input size, mean/std, class names, test views) as
JSON of ``WeightsMetadata.to_dict()``: ONNX in ``metadata_props``, TorchScript and .pt2 as an extra
file, both under ``METADATA_KEY``. Every export is checked before it is returned: the file is
loaded back (onnxruntime for ONNX) and run on a few real test images, and its logits are compared
with PyTorch's.

The paper's LRN exports as plain operators (see ``models.layers.LocalResponseNorm``): ONNX's own
``LRN`` operator, one per tower, with alpha multiplied by the window size.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import AlexNetError
from .runs import check_output
from .weights import WeightsMetadata, load_weights

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}  # format -> file suffix
METADATA_KEY = "alexnet.json"
CHECK_IMAGES = 8  # images the exported file and PyTorch are compared on
# fp32 kernels of different libraries sum in different orders: on the registered models the
# exported logits differ from PyTorch's by up to ~1e-6 of their largest magnitude (measured: 1.8e-6
# on alexnet_paper's logits of magnitude 2.9). 1e-4 of it leaves a 50x margin, and a wrong layer or
# a misplaced LRN alpha (a 5x weaker normalisation) is far above it.
RELATIVE_TOLERANCE = 1e-4
# The dataset whose test images check a model of this input size when its weights name none.
DEFAULT_CHECK_DATA = {(1, 28, 28): "fashion-mnist", (3, 32, 32): "cifar10"}
EXPORT_EXTRA = "pip install alexnet[export] (or: pip install onnx onnxscript onnxruntime)"


@dataclass(frozen=True)
class ExportResult:
    """A written export and how it compared with PyTorch."""

    path: Path
    format: str
    dynamic_batch: bool
    metadata: WeightsMetadata
    images: int  # how many images the check ran
    image_source: str  # "fashion-mnist test images" or "random images (seed 0)"
    max_abs_diff: float  # largest |exported logit - PyTorch logit|
    tolerance: float
    top1_agreement: float  # fraction of images with the same top-1 class

    def describe(self) -> str:
        batch = "dynamic batch" if self.dynamic_batch else "batch of 1"
        return (f"wrote {self.path} ({self.format}, {batch}, input {'x'.join(map(str, self.metadata.input_size))})\n"
                f"checked against PyTorch on {self.images} {self.image_source}: max abs diff "
                f"{self.max_abs_diff:.2e} (tolerance {self.tolerance:.1e}), top-1 agreement {self.top1_agreement:.0%}")


def export(
    source: str | Path | nn.Module,
    format: str,
    out: str | Path | None = None,
    dynamic_batch: bool = False,
    *,
    metadata: WeightsMetadata | None = None,
) -> ExportResult:
    """Export a weights file, a run folder (its ``model.safetensors``) or a model to ``format``
    ("onnx", "torchscript" or "pt2") and check the file against PyTorch on a real batch.

    ``out`` defaults to the weights' path with the format's suffix (.onnx, .pt, .pt2); a model
    passed directly needs ``out``, and ``metadata`` to say how its input is preprocessed (without
    it the file records mean 0 and std 1). ``dynamic_batch`` exports any batch size; otherwise the
    file takes one image at a time. Raises ``AlexNetError`` for an unknown format, unusable
    weights, missing ONNX packages, or an export whose outputs differ from PyTorch's.
    """
    if format not in FORMATS:
        raise AlexNetError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}")
    if format == "onnx":
        _require_onnx()
    model, metadata, weights = _resolve(source, metadata)
    if out is None:
        if weights is None:
            raise AlexNetError("exporting a model object needs out= (the file to write)")
        out = weights.with_suffix(FORMATS[format])
    # the format's own suffix (a pt2 archive named .onnx is no ONNX file); not a run's or an input's file
    out = check_output(out, "--out", inputs=(weights,) if weights else (), suffixes=(FORMATS[format],))

    images, image_source = check_images(metadata)
    with torch.no_grad():
        expected = model(images)
    example = images[:2] if dynamic_batch else images[:1]
    writer = {"onnx": _write_onnx, "torchscript": _write_torchscript, "pt2": _write_pt2}[format]
    text = json.dumps(metadata.to_dict())
    checked: list = []

    def write_and_check(path: Path) -> None:  # the file is checked before it takes out's name
        writer(model, example, dynamic_batch, path, text)
        run = {"onnx": _onnx_runner, "torchscript": _torchscript_runner, "pt2": _pt2_runner}[format](path)
        with torch.no_grad():
            if dynamic_batch:
                got = run(images)
            else:  # the file was traced for one image: feed them one at a time
                got = torch.cat([run(image[None]) for image in images])
        difference = (got - expected).abs().max().item()
        tolerance = RELATIVE_TOLERANCE * max(1.0, expected.abs().max().item())
        agreement = (got.argmax(1) == expected.argmax(1)).float().mean().item()
        if not math.isfinite(difference) or difference > tolerance:
            raise AlexNetError(f"the exported model differs from PyTorch's: max abs diff {difference:.3g} over "
                               f"{len(images)} {image_source} (tolerance {tolerance:.1g}, top-1 agreement "
                               f"{agreement:.0%}); nothing was written to {out}")
        checked.append((difference, tolerance, agreement))

    _write_atomically(out, write_and_check)
    difference, tolerance, agreement = checked[0]
    return ExportResult(out, format, dynamic_batch, metadata, len(images), image_source, difference, tolerance,
                        agreement)


def read_export_metadata(path: str | Path) -> WeightsMetadata:
    """The ``WeightsMetadata`` stored in an exported file (.onnx, .pt, .pt2); no weights are loaded."""
    path = Path(path)
    if not path.is_file():
        raise AlexNetError(f"no exported model at {path}")
    text = None
    if path.suffix == ".onnx":
        onnx = _require_onnx()
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as error:  # protobuf's DecodeError and friends
            raise AlexNetError(f"{path} is not an ONNX file ({error})") from None
        text = next((entry.value for entry in model.metadata_props if entry.key == METADATA_KEY), None)
    elif zipfile.is_zipfile(path):  # TorchScript and .pt2 archives keep extra files under <archive>/extra/
        with zipfile.ZipFile(path) as archive:
            member = next((name for name in archive.namelist() if name.endswith(f"extra/{METADATA_KEY}")), None)
            text = archive.read(member).decode() if member else None
    if text is None:
        raise AlexNetError(f"{path} carries no alexnet metadata; it was not written by `alexnet export`")
    try:
        values = json.loads(text)
    except ValueError:
        values = None
    if not isinstance(values, dict):
        raise AlexNetError(f"{path} has damaged alexnet metadata; export it again")
    return WeightsMetadata.from_dict(values, path)


def check_images(metadata: WeightsMetadata, count: int = CHECK_IMAGES) -> tuple[torch.Tensor, str]:
    """``count`` test images normalised as the model was trained, and where they came from: the
    weights' dataset (or Fashion-MNIST for 1x28x28 models, CIFAR-10 for 3x32x32) where it is on this
    machine, deterministic random images otherwise."""
    from .data import load_tensors, normalize  # the datasets' readers, only when images are checked

    input_size = tuple(metadata.input_size)
    dataset = metadata.dataset or DEFAULT_CHECK_DATA.get(input_size)
    images = None
    if dataset is not None:
        try:
            split = load_tensors(dataset, "test", data_dir=metadata.data_dir)
            if tuple(split.images.shape[1:]) == input_size:
                images, source = split.images[:count].float() / 255, f"{dataset} test images"
        except AlexNetError:  # not on this machine, or streamed from files: random images check as well
            pass
    if images is None:  # with the training data's channels (grey or RGB), as the loaders read them
        generator = torch.Generator().manual_seed(0)
        shape = (count, len(metadata.mean), *input_size[1:])
        images, source = torch.rand(*shape, generator=generator), "random images (seed 0)"
    return normalize(images, tuple(metadata.mean), tuple(metadata.std), input_size[0]), source


# --- where the model comes from -----------------------------------------------------------------


def _resolve(source, metadata: WeightsMetadata | None) -> tuple[nn.Module, WeightsMetadata, Path | None]:
    """(model in fp32 eval mode on the CPU, its metadata, the weights file or None)."""
    if isinstance(source, nn.Module):
        model = copy.deepcopy(source).float().cpu().eval()  # the caller's model is left as it was
        return model, metadata or _module_metadata(model), None
    from .inference import weights_path  # (inference imports the image transforms)

    weights = weights_path(source)  # a run still training, a checkpoint, a .pth: refused saying what to pass
    model, stored = load_weights(weights)  # a file that is not ours: AlexNetError saying so
    return model.float().eval(), metadata or stored, weights


def _module_metadata(model: nn.Module) -> WeightsMetadata:
    """What a bare model says about itself: its name, options and input size; no preprocessing."""
    input_size = tuple(getattr(model, "input_size", ()))
    if len(input_size) != 3:
        raise AlexNetError("this model has no input_size (C, H, W); export an AlexNet, or pass metadata=")
    classes = getattr(model, "num_classes", None) or model.get_classifier().out_features
    return WeightsMetadata(
        model=getattr(model, "model_name", type(model).__name__), model_options=dict(getattr(model, "options", {})),
        class_names=tuple(str(i) for i in range(classes)), input_size=input_size,
        mean=(0.0,) * input_size[0], std=(1.0,) * input_size[0],
    )


def _require_onnx():
    """onnx, onnxscript (torch's ONNX exporter) and onnxruntime (the check), or how to install them."""
    try:
        import onnx
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise AlexNetError(f"ONNX export needs the package {error.name!r}: {EXPORT_EXTRA}") from None
    return onnx


# --- writing each format ------------------------------------------------------------------------


def _write_atomically(out: Path, write) -> None:
    """``write(temporary_path)`` next to ``out``, then renamed over it: no half-written file, and
    none at all when ``write`` raises (the old ``out``, if any, stays as it was)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # the format's own suffix: torch.export.save warns about any other
        handle, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=out.suffix)
        os.close(handle)
    except OSError as error:
        raise AlexNetError(f"cannot write {out} ({error.strerror or error}); choose another --out") from None
    try:
        write(Path(temporary))
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(temporary, 0o666 & ~mask)  # mkstemp's 0600 would hide the file from its group
        os.replace(temporary, out)
    except OSError as error:
        raise AlexNetError(f"cannot write {out} ({error.strerror or error}); choose another --out") from None
    finally:
        Path(temporary).unlink(missing_ok=True)


def _batch_dim():
    return torch.export.Dim("batch", min=1, max=65_536)


def _write_onnx(model: nn.Module, example: torch.Tensor, dynamic_batch: bool, path: Path, text: str) -> None:
    shapes = ({0: _batch_dim()},) if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnxscript's notes on its own optimiser
        program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=shapes, input_names=["images"],
                                    output_names=["logits"], verbose=False)
    program.model.metadata_props[METADATA_KEY] = text
    program.save(str(path), external_data=False)


def _write_torchscript(model: nn.Module, example: torch.Tensor, dynamic_batch: bool, path: Path, text: str) -> None:
    # Traced, not scripted: the trace records the operators one image takes, and the batch size
    # stays a variable in them, so a traced file takes any batch (dynamic_batch only adds a check).
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export (.pt2), but it is what C++ libtorch and
        # many serving tools load; the input-size checks in forward are constants of the trace.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, example, check_inputs=[(torch.cat([example, example]),)])
        torch.jit.save(traced, str(path), _extra_files={METADATA_KEY: text})


def _write_pt2(model: nn.Module, example: torch.Tensor, dynamic_batch: bool, path: Path, text: str) -> None:
    shapes = ({0: _batch_dim()},) if dynamic_batch else None
    program = torch.export.export(model, (example,), dynamic_shapes=shapes)
    torch.export.save(program, str(path), extra_files={METADATA_KEY: text})


# --- running them back --------------------------------------------------------------------------


def _onnx_runner(path: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: torch.from_numpy(session.run(None, {name: images.numpy()})[0])


def _torchscript_runner(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


def _pt2_runner(path: Path):
    return torch.export.load(str(path)).module()
