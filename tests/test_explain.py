"""alexnet explain: attribution maps that pass the sanity checks of Adebayo et al. (2018) and find
the answer where it is known, receptive fields equal to the gradient's, top patches equal to a
brute-force search, hooks that never stay, and the command line over all of it."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from alexnet import build_model
from alexnet.cli import main
from alexnet.explain import (METHODS, attribute, conv_outputs, dataset_batches, explain, feature_maps,
                             receptive_field, top_patches)
from alexnet.explain.network import conv_output
from alexnet.inference import open_trained
from alexnet.models.layers import LocalResponseNorm
from alexnet.weights import WeightsMetadata
from fashion_small import fashion_small_test

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
DATA = Path(__file__).parent / "data"


def spearman(first: torch.Tensor, second: torch.Tensor) -> float:
    """Spearman's rank correlation of two maps (ties broken by position: maps here are continuous)."""
    def ranks(values):
        values = values.flatten().double()
        result = torch.empty_like(values)
        result[values.argsort()] = torch.arange(len(values), dtype=torch.float64)
        return result - result.mean()

    first, second = ranks(first), ranks(second)
    return float((first * second).sum() / (first.norm() * second.norm()))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A one-epoch run on 5% of Fashion-MNIST, tested in fp32 (the numbers compared are exact)."""
    if not FASHION.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--subset", "0.05", "--val-size", "500", "--epochs", "1", "--batch-size", "64",
                 "--precision", "fp32", "--quiet", "--eval-batch-size", "500", "--out", str(out),
                 "--name", "fm", "--no-report", "--no-flip-test",
                 "--data-dir", fashion_small_test()]) == 0
    return out / "fm"


# --- receptive fields -----------------------------------------------------------------------------


def linearised(model: nn.Module) -> nn.Module:
    """A copy whose every input pixel in a unit's receptive field reaches it: positive weights, no
    activation, average instead of max pooling (a max passes the gradient of one input only), no LRN."""
    copied = copy.deepcopy(model).float().eval()
    for index, module in enumerate(copied.features):
        if isinstance(module, nn.MaxPool2d):
            copied.features[index] = nn.AvgPool2d(module.kernel_size, module.stride, module.padding,
                                                  ceil_mode=module.ceil_mode, count_include_pad=False)
        elif isinstance(module, (nn.ReLU, nn.Tanh, LocalResponseNorm, nn.BatchNorm2d)):
            copied.features[index] = nn.Identity()
    with torch.no_grad():
        for parameter in copied.parameters():
            parameter.abs_().add_(0.01)
    return copied


def gradient_box(model: nn.Module, layer: str, row: int, column: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the input pixels whose gradient on the units at (row, column) of
    the layer's maps (all of them: in a ReLU network some are dead) is not zero."""
    image = torch.rand(1, *model.input_size, requires_grad=True)
    maps = model.features[: conv_output(model, layer).output_index + 1](image)
    maps[0, :, row, column].sum().backward()
    rows, columns = image.grad[0].abs().sum(0).nonzero(as_tuple=True)
    return int(rows.min()), int(columns.min()), int(rows.max()) + 1, int(columns.max()) + 1


@pytest.mark.parametrize("name", ["alexnet_small28", "alexnet_paper", "alexnet_owt"])
def test_receptive_field_of_each_layer_is_the_gradients(name):
    model = build_model(name, num_classes=10)
    simple = linearised(model)
    height, width = model.input_size[1:]
    sizes = []
    for layer in conv_outputs(model):
        field = receptive_field(model, layer.name)
        sizes.append(field.size)
        side = simple.features[: layer.output_index + 1](torch.zeros(1, *model.input_size)).shape[-1]
        for row, column in [(side // 2, side // 2), (0, 0), (side - 1, side // 3)]:  # the middle, and clipped
            assert field.box(row, column, height, width) == gradient_box(simple, layer.name, row, column), \
                (layer.name, row, column)
        # the real network (max pools, ReLUs) never reaches past the field
        top, left, bottom, right = gradient_box(model.eval(), layer.name, side // 2, side // 2)
        expected = field.box(side // 2, side // 2, height, width)
        assert expected[0] <= top and expected[1] <= left and bottom <= expected[2] and right <= expected[3]
    if name == "alexnet_paper":
        assert sizes == [11, 51, 99, 131, 163]  # the published receptive fields of AlexNet's conv1-conv5


# --- the sanity checks of Adebayo et al. (2018) -----------------------------------------------------


def randomised_from_top(model: nn.Module, down_to: str) -> nn.Module:
    """A copy whose layers from the classifier down to ``down_to`` (a convolution) are redrawn at the
    scale of their trained weights: the cascading randomisation of Adebayo et al., Section 4."""
    copied = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    features = list(copied.features)
    layers = features[features.index(conv_output(copied, down_to).conv):] + list(copied.classifier)
    with torch.no_grad():
        for module in layers:
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                scale = float(module.weight.std())
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * scale)
                if module.bias is not None:
                    module.bias.zero_()
    return copied


def edge_map(images: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of grey images (B, 1, H, W) -> (B, H, W)."""
    sobel = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]).view(1, 1, 3, 3)
    across = F.conv2d(images.float(), sobel, padding=1)
    down = F.conv2d(images.float(), sobel.transpose(2, 3), padding=1)
    return (across**2 + down**2).sqrt()[:, 0]


@needs_fashion
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_maps_fail_when_the_weights_are_randomised_and_are_not_edge_maps(run_dir, method):
    trained = open_trained(run_dir, device="cpu", precision="fp32")
    images, labels = next(iter(dataset_batches(trained, batch_size=3)))
    targets = labels.tolist()
    maps = attribute(trained.model, images, targets, method)
    assert torch.equal(maps, attribute(trained.model, images, targets, method))  # deterministic: the control
    for layer in ("conv5", "conv4", "conv3", "conv2", "conv1"):  # the classifier, then conv5, ... randomised
        randomised = attribute(randomised_from_top(trained.model, layer), images, targets, method)
        correlations = [spearman(first, second) for first, second in zip(maps, randomised)]
        assert np.mean(correlations) < 0.5, (layer, correlations)
    edges = [spearman(first.abs(), second) for first, second in zip(maps, edge_map(images))]
    assert np.mean(edges) < 0.5, edges
    assert all(map_.abs().sum() > 0 for map_ in maps)


# --- localisation where the answer is known ---------------------------------------------------------


PATTERNS = 4  # horizontal stripes, vertical stripes, a checkerboard, a solid square


def patterned_images(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """28x28 noise with one 10x10 patch in one of the four quadrants: the class is the patch's
    pattern, the quadrant is random. Four patterns, so that no class can be told by the absence of
    the others' alone. Returns images (N, 1, 28, 28), labels and quadrants (0 top left, 1 top right,
    2 bottom left, 3 bottom right)."""
    images = torch.rand(count, 1, 28, 28, generator=generator) * 0.5 - 0.25
    labels = torch.randint(0, PATTERNS, (count,), generator=generator)
    quadrants = torch.randint(0, 4, (count,), generator=generator)
    stripes = (torch.arange(10) // 2 % 2).float() * 2 - 1  # +1 -1 in 2-pixel bands
    patterns = torch.stack([stripes.view(10, 1).expand(10, 10), stripes.view(1, 10).expand(10, 10),
                            stripes.view(10, 1) * stripes.view(1, 10), torch.ones(10, 10)])
    for index in range(count):
        top = 2 + 14 * int(quadrants[index] // 2) + int(torch.randint(0, 3, (1,), generator=generator))
        left = 2 + 14 * int(quadrants[index] % 2) + int(torch.randint(0, 3, (1,), generator=generator))
        images[index, 0, top:top + 10, left:left + 10] = patterns[labels[index]]
    return images, labels, quadrants


def quadrant_mass(maps: torch.Tensor, quadrants: torch.Tensor) -> torch.Tensor:
    """Share of each map's positive mass inside the given quadrant of the image."""
    positive = maps.clamp(min=0)
    half = maps.shape[-1] // 2
    inside = torch.stack([positive[i, (q // 2) * half:(q // 2 + 1) * half, (q % 2) * half:(q % 2 + 1) * half].sum()
                          for i, q in enumerate(quadrants.tolist())])
    return inside / positive.flatten(1).sum(1).clamp(min=1e-12)


@pytest.mark.slow
def test_gradcam_and_occlusion_find_the_deciding_patch():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    # alexnet_small28's shape at half its widths: the task needs no more, and the test runs 4x faster
    model = build_model("alexnet_small28", num_classes=PATTERNS, norm="batch", dropout=0.0, conv_widths=(16, 32, 64, 64, 48))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    model.train()
    for _ in range(100):
        images, labels, _ = patterned_images(32, generator)
        loss = F.cross_entropy(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    images, labels, quadrants = patterned_images(24, torch.Generator().manual_seed(1))  # held out
    model.eval()
    with torch.no_grad():
        assert (model(images).argmax(1) == labels).float().mean() >= 0.95
    # Grad-CAM at conv2, whose units see 11x11 pixels, about the patch: every unit of conv5 sees the
    # whole 28x28 image, and its maps (7x7) place the patch less sharply.
    for method, layer in (("gradcam", "conv2"), ("occlusion", None)):
        mass = quadrant_mass(attribute(model, images, labels.tolist(), method, layer=layer), quadrants)
        assert mass.mean() >= 0.7, (method, mass.mean())


# --- top patches -------------------------------------------------------------------------------------


@needs_fashion
@pytest.mark.parametrize("layer", ["conv1", "conv3", "conv5"])
def test_top_patches_are_the_brute_force_top(run_dir, layer):
    trained = open_trained(run_dir, device="cpu", precision="fp32")
    limit = 300
    result = top_patches(trained, dataset_batches(trained, batch_size=64), layer, top=9, limit=limit)
    assert result.images_seen == limit
    images, labels = zip(*dataset_batches(trained, batch_size=64))
    images, labels = torch.cat(images)[:limit], torch.cat(labels)[:limit]
    output = conv_output(trained.model, layer)
    with torch.no_grad():
        maps = trained.model.eval().features[: output.output_index + 1](images).float()  # (N, filters, h, w)
    strongest = maps.flatten(2).amax(2)  # (N, filters)
    expected = strongest.topk(9, dim=0).values.T  # (filters, 9)
    torch.testing.assert_close(torch.from_numpy(result.values), expected, rtol=1e-5, atol=1e-6)
    side = maps.shape[-1]
    shown = (images * trained.metadata.std[0] + trained.metadata.mean[0]).clamp(0, 1)[:, 0]  # (N, H, W)
    for filter_index in range(0, maps.shape[1], 7):
        for slot in range(9):
            image, (row, column) = result.images[filter_index, slot], result.positions[filter_index, slot]
            assert maps[image, filter_index, row, column] == pytest.approx(result.values[filter_index, slot], rel=1e-5)
            assert labels[image] == result.labels[filter_index, slot]
            top, left, bottom, right = result.boxes[filter_index, slot]
            field = result.field
            start_row = top - (row * field.stride + field.offset)
            start_column = left - (column * field.stride + field.offset)
            patch = result.patches[filter_index, slot, start_row:start_row + bottom - top,
                                   start_column:start_column + right - left, 0]
            np.testing.assert_allclose(patch, shown[image, top:bottom, left:right].numpy(), atol=0.5 / 255 + 1e-6)
            assert 0 <= row < side and 0 <= column < side
    assert (result.kernels is not None) == (layer == "conv1")


# --- the model is left as it was --------------------------------------------------------------------


def hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_two_towers_lrn_channels_last_and_bf16_explained_twice_alike_and_left_as_they_were(precision):
    torch.manual_seed(0)
    model = build_model("alexnet_paper", num_classes=4, conv_widths=(16, 32, 32, 32, 16))  # two towers, LRN
    metadata = WeightsMetadata("alexnet_paper", dict(model.options), ("a", "b", "c", "d"), (3, 227, 227),
                               (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), precision=precision)
    model.train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    image = (torch.rand(3, 240, 260) * 255).to(torch.uint8)
    trained = open_trained((model, metadata), device="cpu")  # channels-last, as every model is run
    assert model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    first = explain(trained, [image, image.float() / 255], method="gradcam", layer="conv2")
    second = explain(trained, [image, image.float() / 255], method="gradcam", layer="conv2")
    assert all(np.array_equal(one.attribution, two.attribution) for one, two in zip(first, second))
    assert first[0].attribution.shape == (227, 227) and first[0].attribution.max() > 0
    assert ("attributed in fp32" in first[0].note) == (precision == "bf16")
    assert model.training and hooks(model) == 0
    assert all(module.inplace for module in model.modules() if isinstance(module, nn.ReLU))
    assert all(parameter.requires_grad and parameter.grad is None for parameter in model.parameters())
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert all(value.dtype == torch.float32 for value in model.state_dict().values() if value.is_floating_point())
    maps = feature_maps(trained, image)
    assert list(maps.layers) == ["conv1", "conv2", "conv3", "conv4", "conv5"] and hooks(model) == 0
    conv1 = maps.layers["conv1"]
    assert conv1.shape == (16, 55, 55) and (conv1.mean((1, 2))[:-1] >= conv1.mean((1, 2))[1:]).all()


def test_every_method_works_on_every_registered_layer_kind():
    torch.manual_seed(0)
    model = build_model("alexnet_small28", num_classes=3)  # LRN, two towers, 28x28 grey
    images = torch.randn(2, 1, 28, 28)
    for method in METHODS:
        maps = attribute(model, images, [0, 2], method)
        assert maps.shape == (2, 28, 28) and torch.isfinite(maps).all() and maps.abs().sum() > 0
    for layer in conv_outputs(model):
        assert attribute(model, images, [1, 1], "gradcam", layer=layer.name).shape == (2, 28, 28)
    assert hooks(model) == 0


# --- the command line --------------------------------------------------------------------------------


@needs_fashion
def test_explain_command_writes_pictures_and_arrays_and_skips_unreadable_files(run_dir, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    out = tmp_path / "out"
    assert main(["explain", str(run_dir), str(DATA / "chelsea.png"), str(broken), "--method", "occlusion",
                 "--class", "Sandal", "--out", str(out), "--json", "--precision", "fp32"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert "skipped" in captured.err and "broken.png" in captured.err
    assert len(rows) == 1 and rows[0]["class"] == "Sandal" and rows[0]["method"] == "occlusion"
    array = np.load(rows[0]["attribution"])
    assert array.shape == (28, 28) and np.isfinite(array).all()
    with Image.open(rows[0]["picture"]) as picture:
        assert picture.format == "PNG" and picture.size[0] > 300
    # the class in the file name (Sandal is class 5), and Grad-CAM's layer: another choice writes beside it
    assert Path(rows[0]["attribution"]).name == "000-chelsea-occlusion-class5.npy"
    assert main(["explain", str(run_dir), str(DATA / "chelsea.png"), "--layer", "conv4", "--out", str(out),
                 "--precision", "fp32"]) == 0
    assert "000-chelsea-gradcam-conv4-class" in capsys.readouterr().out
    assert main(["predict", str(run_dir), str(DATA / "chelsea.png"), "--json", "--precision", "fp32",
                 "--top-k", "10"]) == 0
    prediction = json.loads(capsys.readouterr().out)[0]["predictions"]
    probabilities = {item["class"]: item["probability"] for item in prediction}
    assert rows[0]["probability"] == pytest.approx(probabilities["Sandal"], rel=1e-5)  # predict's own
    assert rows[0]["predicted_class"] == prediction[0]["class"]

    assert main(["explain", str(run_dir), str(broken), "--out", str(out)]) == 2
    assert "no image could be read" in capsys.readouterr().err
    assert main(["explain", str(run_dir), str(DATA / "chelsea.png"), "--class", "Cat", "--out", str(out)]) == 2
    assert "unknown class 'Cat'" in capsys.readouterr().err
    assert main(["explain", str(run_dir), str(DATA / "chelsea.png"), "--method", "saliency", "--layer", "conv3",
                 "--out", str(out)]) == 2
    assert "--layer" in capsys.readouterr().err
    assert main(["explain", str(run_dir), str(DATA / "chelsea.png"), "--layer", "conv9", "--out", str(out)]) == 2
    assert "conv1, conv2, conv3, conv4, conv5" in capsys.readouterr().err


@needs_fashion
def test_feature_maps_and_filters_commands(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", str(run_dir), str(DATA / "coffee.webp"), "--feature-maps", "--out", str(out)]) == 0
    written = sorted(path.name for path in out.iterdir())
    assert written == ["000-coffee-feature-maps.npz", "000-coffee-feature-maps.png"]
    with np.load(out / written[0]) as arrays:
        assert arrays["conv1"].shape == (32, 28, 28) and arrays["conv5"].shape == (96, 7, 7)
    capsys.readouterr()
    assert main(["explain", str(run_dir), "--filters", "--layer", "conv1", "--images", "200", "--top", "4",
                 "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images_searched"] == 200 and summary["receptive_field"] == 5 and summary["top"] == 4
    with np.load(summary["arrays"]) as arrays:
        assert arrays["patches"].shape == (32, 4, 5, 5, 1) and arrays["kernels"].shape == (32, 1, 5, 5)
    assert main(["explain", str(run_dir), str(DATA / "coffee.webp"), "--filters", "--out", str(out)]) == 2
