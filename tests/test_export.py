"""Export to ONNX, TorchScript and torch.export (.pt2): every model and switch exports, the file
computes what PyTorch computes, the paper's LRN becomes ONNX's LRN with alpha x n, metadata travels."""

import argparse
import builtins
import functools
import importlib
import itertools
import json
import pkgutil
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from alexnet import AlexNetError, build_model, list_models
from alexnet.cli.network import add_export_command
from alexnet.export import FORMATS, METADATA_KEY, check_images, export, read_export_metadata
from alexnet.models import LocalResponseNorm
from alexnet.models.layers import lrn_reference
from alexnet.weights import WeightsMetadata, save_weights

try:
    import onnx
    import onnxruntime
    import onnxscript  # noqa: F401  (torch's ONNX exporter)
except ImportError as missing:
    onnx = onnxruntime = None
    ONNX_MISSING = f"{missing.name} is not installed (pip install alexnet[export])"
else:
    ONNX_MISSING = ""

needs_onnx = pytest.mark.skipif(bool(ONNX_MISSING), reason=ONNX_MISSING or "onnx installed")
BIG_MODELS = ("alexnet_paper", "alexnet_owt", "alexnet_tutorial28")  # 57-62M parameters each


@pytest.fixture(scope="module", autouse=True)
def torchlib_listed_once():
    """torch's ONNX exporter asks onnxscript for its list of torchlib functions on every export, and
    onnxscript builds the list anew, parsing the source of each of ~500 functions (this file on one
    core of a 2-core Xeon: 87 s, 78 s with the list built once). The list depends on the installed
    onnxscript alone, so this file's exports share one; what each export computes is unchanged."""
    if ONNX_MISSING:
        yield
        return
    import onnxscript._framework_apis as apis

    with pytest.MonkeyPatch.context() as patch:
        for found in pkgutil.iter_modules(apis.__path__):
            module = importlib.import_module(f"{apis.__name__}.{found.name}")
            if callable(getattr(module, "get_torchlib_ops", None)):
                patch.setattr(module, "get_torchlib_ops", functools.cache(module.get_torchlib_ops))
        yield


def formats():
    """Each format as a parameter, ONNX skipped with its reason where its packages are missing."""
    return [pytest.param(name, marks=needs_onnx) if name == "onnx" else name for name in FORMATS]


def load_exported(path, fmt):
    """The exported file loaded on its own, as a function of a batch of images giving logits."""
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda images: torch.from_numpy(session.run(None, {name: images.numpy()})[0])
    if fmt == "torchscript":
        with warnings.catch_warnings():  # TorchScript is deprecated for torch.export; libtorch still loads it
            warnings.filterwarnings("ignore", message="`torch.jit.load` is deprecated", category=FutureWarning)
            return torch.jit.load(str(path))
    return torch.export.load(str(path)).module()


def assert_same_as_pytorch(model, result, images):
    """The file, loaded on its own, gives PyTorch's logits (within the check's tolerance) and top-1."""
    with torch.no_grad():
        expected = model.eval()(images)
        exported = load_exported(result.path, result.format)  # loaded once: a big model's file takes seconds
        got = exported(images) if result.dynamic_batch else torch.cat([exported(image[None]) for image in images])
    assert (got - expected).abs().max().item() <= result.tolerance
    assert torch.equal(got.argmax(1), expected.argmax(1))
    assert result.max_abs_diff <= result.tolerance and result.top1_agreement == 1.0


# --- every model, every format ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", formats())
@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.slow) if name in BIG_MODELS else name for name in list_models()])
@pytest.mark.slow
def test_every_registered_model_exports_to_every_format(name, fmt, tmp_path):
    torch.manual_seed(0)
    model = build_model(name)
    result = export(model, fmt, tmp_path / f"{name}{FORMATS[fmt]}")
    images, _ = check_images(result.metadata, count=4)
    assert_same_as_pytorch(model, result, images)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", formats())
def test_every_switch_combination_exports(fmt, tmp_path):
    # activation and pooling are plain operators in every format and do not touch the LRN or the
    # towers, so they are paired (relu with overlapping, tanh with non-overlapping): 12 of the 24
    # combinations, each value of each switch with every towers x norm pair. The export's own check
    # ran each file, loaded back on its own, on 8 real test images (the tests above repeat that check
    # outside export for every registered model).
    pairs = (("relu", "overlapping"), ("tanh", "non-overlapping"))
    for towers, norm, (activation, pooling) in itertools.product((1, 2), ("lrn", "batch", "none"), pairs):
        torch.manual_seed(0)
        model = build_model("alexnet_small32", towers=towers, norm=norm, activation=activation, pooling=pooling)
        if norm == "batch":  # running statistics that are not the initial 0 and 1
            model.train()
            with torch.no_grad():
                model(torch.randn(16, 3, 32, 32))
        result = export(model, fmt, tmp_path / f"model-{towers}-{norm}-{activation}{FORMATS[fmt]}")
        images, source = check_images(result.metadata)
        assert result.images == 8 and result.image_source == source
        assert result.max_abs_diff <= result.tolerance and result.top1_agreement == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("fmt", formats())
def test_dynamic_batch_takes_any_batch_size(fmt, tmp_path):
    torch.manual_seed(0)
    model = build_model("alexnet_small28").eval()
    result = export(model, fmt, tmp_path / f"model{FORMATS[fmt]}", dynamic_batch=True)
    images = torch.randn(5, 1, 28, 28)
    exported = load_exported(result.path, fmt)
    for batch in (images[:1], images[:3], images):
        with torch.no_grad():
            torch.testing.assert_close(exported(batch), model(batch), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@needs_onnx
def test_static_onnx_takes_one_image(tmp_path):
    result = export(build_model("alexnet_small28"), "onnx", tmp_path / "model.onnx")
    shape = onnx.load(str(result.path)).graph.input[0].type.tensor_type.shape
    assert [d.dim_value for d in shape.dim] == [1, 1, 28, 28]


# --- the paper's LRN in ONNX --------------------------------------------------------------------


@needs_onnx
@pytest.mark.parametrize("towers", (1, 2))
def test_onnx_lrn_is_the_papers_lrn(towers, tmp_path):
    torch.manual_seed(0)
    layer = LocalResponseNorm(groups=towers)
    x = torch.rand(2, 12, 5, 5) * 40  # large activations make alpha matter: d = 2 + alpha * sum(a^2) ~ 2.5
    torch.onnx.export(nn.Sequential(layer).eval(), (x,), str(tmp_path / "lrn.onnx"), dynamo=True, verbose=False)
    graph = onnx.load(str(tmp_path / "lrn.onnx")).graph
    nodes = [node for node in graph.node if node.op_type == "LRN"]
    assert len(nodes) == towers  # one LRN per tower: each normalised on its own
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    # ONNX divides alpha by size, the paper does not: 1e-4 x 5
    assert attributes["alpha"] == pytest.approx(5e-4) and attributes["size"] == 5
    assert attributes["beta"] == pytest.approx(0.75) and attributes["bias"] == pytest.approx(2.0)
    session = onnxruntime.InferenceSession(str(tmp_path / "lrn.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    expected = layer(x)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    # the same operator given the paper's alpha unscaled would normalise 5x too weakly: visibly off
    weaker = torch.cat([nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(t) for t in x.chunk(towers, 1)], 1)
    assert (weaker - expected).abs().max() > 1e-2


@pytest.mark.parametrize("groups", (1, 2))
def test_lrn_reference_equals_the_fast_layer(groups):
    torch.manual_seed(0)
    x = torch.rand(2, 16, 6, 6, dtype=torch.float64) * 40
    torch.testing.assert_close(lrn_reference(x, groups=groups), LocalResponseNorm(groups=groups)(x))


# --- metadata -----------------------------------------------------------------------------------

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("alexnet_small28", towers=1)
    metadata = WeightsMetadata(
        model="alexnet_small28", model_options=model.options, class_names=CLASSES, input_size=(1, 28, 28),
        mean=(0.2860,), std=(0.3530,), dataset="fashion-mnist", test_views={"crop_fraction": 1.0, "views": "mirror"},
        epochs=10, test_top1=0.9321,
    )
    return save_weights(tmp_path_factory.mktemp("run") / "model.safetensors", model, metadata), metadata


@pytest.mark.slow
@pytest.mark.parametrize("fmt", formats())
def test_metadata_round_trips_and_default_path_is_next_to_the_weights(weights_file, fmt):
    path, metadata = weights_file
    result = export(path, fmt)
    assert result.path == path.with_suffix(FORMATS[fmt])
    assert read_export_metadata(result.path) == metadata
    assert result.image_source == "fashion-mnist test images"
    if fmt == "onnx":
        props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
        assert json.loads(props[METADATA_KEY])["class_names"] == list(CLASSES)
    elif fmt == "torchscript":
        files = {METADATA_KEY: ""}
        with warnings.catch_warnings():  # as in load_exported
            warnings.filterwarnings("ignore", message="`torch.jit.load` is deprecated", category=FutureWarning)
            torch.jit.load(str(result.path), _extra_files=files)
        assert json.loads(files[METADATA_KEY])["mean"] == [0.2860]
    else:
        files = {METADATA_KEY: ""}
        torch.export.load(str(result.path), extra_files=files)
        assert json.loads(files[METADATA_KEY])["test_views"] == {"crop_fraction": 1.0, "views": "mirror"}


def test_a_run_folder_exports_its_weights(weights_file):
    path, _ = weights_file
    result = export(path.parent, "pt2")
    assert result.path == path.parent / "model.pt2"


# --- bad input ----------------------------------------------------------------------------------


def test_unsupported_format(weights_file):
    with pytest.raises(AlexNetError, match="unknown export format 'tflite'; choose one of: onnx, torchscript, pt2"):
        export(weights_file[0], "tflite")


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(AlexNetError, match="no weights file at .*nothing.safetensors"):
        export(tmp_path / "nothing.safetensors", "pt2")
    with pytest.raises(AlexNetError, match="no weights file or run folder at .*nothing$"):
        export(tmp_path / "nothing", "pt2")
    with pytest.raises(AlexNetError, match="holds no model.safetensors"):
        export(tmp_path, "pt2")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(AlexNetError, match="has no alexnet metadata"):
        export(tmp_path / "other.safetensors", "torchscript")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(AlexNetError, match="is not a safetensors weights file"):  # named from its first bytes
        export(tmp_path / "junk.safetensors", "torchscript")
    (tmp_path / "plain.pt").write_bytes(b"not a zip")
    with pytest.raises(AlexNetError, match="carries no alexnet metadata"):
        read_export_metadata(tmp_path / "plain.pt")


def test_missing_onnx_packages_say_how_to_install(weights_file, monkeypatch):
    real_import = builtins.__import__

    def without_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("no onnxruntime", name="onnxruntime")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_onnxruntime)
    with pytest.raises(AlexNetError, match=r"needs the package 'onnxruntime': pip install alexnet\[export\]"):
        export(weights_file[0], "onnx")


def test_an_export_that_computes_differently_is_refused(weights_file, tmp_path, monkeypatch):
    import alexnet.export as export_module

    def off_by_a_little(path):
        loaded = torch.export.load(str(path)).module()
        return lambda images: loaded(images) + 1e-2

    monkeypatch.setattr(export_module, "_pt2_runner", off_by_a_little)
    with pytest.raises(AlexNetError, match="the exported model differs from PyTorch's: max abs diff 0.01"):
        export(weights_file[0], "pt2", tmp_path / "model.pt2")


# --- the command --------------------------------------------------------------------------------


def run_command(argv):
    parser = argparse.ArgumentParser(prog="alexnet")
    add_export_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def test_export_command_prints_the_check(weights_file, tmp_path, capsys):
    path, _ = weights_file
    assert run_command(["export", str(path), "--format", "torchscript", "--out", str(tmp_path / "m.pt"),
                        "--dynamic-batch"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'm.pt'} (torchscript, dynamic batch, input 1x28x28)" in out
    assert "checked against PyTorch on 8 fashion-mnist test images: max abs diff" in out
    assert "top-1 agreement 100%" in out
    with pytest.raises(SystemExit):
        run_command(["export", str(path), "--format", "tflite"])
    assert np.isfinite(read_export_metadata(tmp_path / "m.pt").mean).all()


# --- alexnet summary: switches, weights, the picture ----------------------------------------------


def run_summary(argv):
    parser = argparse.ArgumentParser(prog="alexnet")
    from alexnet.cli.network import add_summary_command

    add_summary_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["summary", *argv])
    return args.run(args)


def test_summary_takes_the_model_switches(capsys):
    assert run_summary(["alexnet_paper", "--towers", "1"]) == 0
    total = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("total"))
    assert total.split()[1:] == ["62,378,344", "1,135,256,096"]
    run_summary(["alexnet_small28", "--norm", "batch", "--format", "json"])
    layers = json.loads(capsys.readouterr().out)["layers"]
    assert "BatchNorm2d" in {row["kind"] for row in layers} and "LocalResponseNorm" not in {row["kind"] for row in layers}
    with pytest.raises(SystemExit):
        run_summary(["alexnet_paper", "--norm", "layer"])


def test_summary_of_weights_and_run_folders(weights_file, capsys):
    path, _ = weights_file
    run_summary([str(path), "--format", "json"])
    from_file = json.loads(capsys.readouterr().out)
    run_summary([str(path.parent), "--towers", "2", "--format", "json"])
    from_folder = json.loads(capsys.readouterr().out)
    assert from_file["model"] == "alexnet_small28" and from_file["layers"][-1]["output_shape"] == [10]
    assert from_folder["model"] == "alexnet_small28 --towers 2"
    # the weights were trained with one tower: two towers halve conv2, conv4 and conv5's weights
    assert from_folder["parameters"] < from_file["parameters"] == sum(p.numel() for p in build_model(
        "alexnet_small28", towers=1).parameters())
    with pytest.raises(AlexNetError, match="no weights file or run folder at missing/model.safetensors"):
        run_summary(["missing/model.safetensors"])


def test_summary_plot(tmp_path, capsys):
    from PIL import Image

    assert run_summary(["alexnet_paper", "--plot", str(tmp_path / "paper.png")]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"wrote {tmp_path / 'paper.png'}")
    with Image.open(tmp_path / "paper.png") as picture:
        width, height = picture.size
    assert width > 2 * height > 1000  # ten columns side by side
    run_summary(["alexnet_small28", "--towers", "1", "--plot", str(tmp_path / "small.svg")])
    svg = (tmp_path / "small.svg").read_text()
    assert "conv5" in svg and "(bottom)" not in svg  # one tower: one block per layer
    capsys.readouterr()
    run_summary(["alexnet_small28", "--format", "json", "--plot", str(tmp_path / "small.png")])
    printed = capsys.readouterr()
    assert json.loads(printed.out)["parameters"] > 0 and "wrote" in printed.err  # stdout stays JSON
    with pytest.raises(AlexNetError, match="is not a picture format"):
        run_summary(["alexnet_paper", "--plot", str(tmp_path / "paper.txt")])
