"""The four tutorial networks as their code builds them: parameter counts worked out by hand from
each source's layers, the shapes its code prints, where batch norm sits, Glorot's init, the
recipes, and that they summarise, export, save and fine-tune like the others."""

import json
import math

import pytest
import torch
from torch import nn

from alexnet import build_model, summarize
from alexnet.training.finetune import frozen_modules
from alexnet.training.recipes import get_recipe


def conv(k, c_in, c_out, groups=1):
    """Weights and biases of a k x k convolution."""
    return k * k * (c_in // groups) * c_out + c_out


def dense(n_in, n_out):
    return n_in * n_out + n_out


def batch_norm(channels):
    # PyTorch's parameters are the scale and shift; the running mean and variance are buffers.
    # Keras' summary() counts those too (4 per channel, 2 of them non-trainable).
    return 2 * channels


# (model, parameters by hand, multiply-accumulates per image from `alexnet summary --format json`)
HAND_COUNTS = {
    # Keras: Conv2D 96 3x3 valid, 256/384/384/256 3x3 same; Dense 2304 -> 4096 -> 4096 -> 10.
    "alexnet_keras_cifar": (
        conv(3, 3, 96) + conv(3, 96, 256) + conv(3, 256, 384) + conv(3, 384, 384) + conv(3, 384, 256)
        + dense(256 * 3 * 3, 4096) + dense(4096, 4096) + dense(4096, 10),
        230_086_784,
    ),
    # Keras, two layers per convolution: conv1 2x(11*11*3*48 + 48) = 2 x 17,472 (its summary's
    # count), conv2 2x(5*5*48*128 + 128) = 2 x 153,728, conv3 2x(3*3*256*192 + 192) = 2 x 442,560
    # (both see the concatenation), conv4 2x(3*3*192*192 + 192) = 2 x 331,968, conv5
    # 2x(3*3*192*128 + 128); batch norm on conv1 and conv2 only; Dense 9216 -> 4096 -> 4096 -> 10.
    "alexnet_twotower_bn": (
        2 * conv(11, 3, 48) + batch_norm(96)
        + 2 * conv(5, 48, 128) + batch_norm(256)
        + 2 * conv(3, 256, 192) + 2 * conv(3, 192, 192) + 2 * conv(3, 192, 128)
        + dense(256 * 6 * 6, 4096) + dense(4096, 4096) + dense(4096, 10),
        724_219_904,
    ),
    # Keras: 96 11x11/4, 256 11x11, 384 3x3, 384 3x3, 256 3x3 ("valid"), batch norm after each
    # block; Dense 256 -> 4096 -> 4096 -> 1000 each with batch norm, then 17.
    "alexnet_flowers_bn": (
        conv(11, 3, 96) + batch_norm(96) + conv(11, 96, 256) + batch_norm(256)
        + conv(3, 256, 384) + batch_norm(384) + conv(3, 384, 384) + batch_norm(384)
        + conv(3, 384, 256) + batch_norm(256)
        + dense(256 * 1 * 1, 4096) + batch_norm(4096) + dense(4096, 4096) + batch_norm(4096)
        + dense(4096, 1000) + batch_norm(1000) + dense(1000, 17),
        1_039_576_808,
    ),
    # d2l: Conv2d(1, 96, 11, 4, 1), (96, 256, 5, pad 2), (256, 384, 3), (384, 384, 3), (384, 256, 3);
    # Linear(6400, 4096), (4096, 4096), (4096, 10).
    "alexnet_d2l": (
        conv(11, 1, 96) + conv(5, 96, 256) + conv(3, 256, 384) + conv(3, 384, 384) + conv(3, 384, 256)
        + dense(6400, 4096) + dense(4096, 4096) + dense(4096, 10),
        938_146_176,
    ),
}
TUTORIAL_MODELS = list(HAND_COUNTS)


def test_hand_counts_are_the_sources_numbers():
    # The totals the arithmetic above comes to, and the Keras summary's own per-layer counts.
    assert [HAND_COUNTS[name][0] for name in TUTORIAL_MODELS] == [29_585_290, 56_909_898, 28_075_633, 46_764_746]
    assert (conv(11, 3, 48), conv(5, 48, 128), conv(3, 256, 192), conv(3, 192, 192)) == (
        17_472, 153_728, 442_560, 331_968)
    # Keras counts 4 numbers per batch-norm channel: the two-tower model's summary would total
    # 704 more (96 + 256 channels x 2 running statistics), the Flowers one 10,568 more.
    assert (96 + 256) * 2 == 704 and 96 + 256 + 384 + 384 + 256 + 4096 + 4096 + 1000 == 10_568


@pytest.mark.parametrize("name", TUTORIAL_MODELS)
def test_parameters_and_macs_match_the_hand_count(name):
    params, macs = HAND_COUNTS[name]
    model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == params
    summary = summarize(model)
    assert (summary.parameters, summary.macs) == (params, macs)


def shapes(name, kinds=("Conv2d", "MaxPool2d")):
    return [row.output_shape for row in summarize(build_model(name)).rows if row.kind in kinds]


def test_keras_cifar_shapes():
    # conv1 "valid" 32 -> 30, then 2x2 pools: 15, 7, 3.
    assert shapes("alexnet_keras_cifar") == [
        (96, 30, 30), (96, 15, 15), (256, 15, 15), (256, 7, 7),
        (384, 7, 7), (384, 7, 7), (256, 7, 7), (256, 3, 3),
    ]
    assert shapes("alexnet_keras_cifar", ("Linear",))[0] == (4096,)
    assert build_model("alexnet_keras_cifar").classifier[0].in_features == 2304


def test_twotower_bn_shapes_are_its_keras_summarys():
    # The summary in the tutorial: (None, 56, 56, 48) x 2 after conv1, 27 after the pool, (27, 27,
    # 128) x 2 after conv2, 13 after the pool, (13, 13, 192) x 2 after conv3 and conv4.
    assert shapes("alexnet_twotower_bn") == [
        (96, 56, 56), (96, 27, 27), (256, 27, 27), (256, 13, 13),
        (384, 13, 13), (384, 13, 13), (256, 13, 13), (256, 6, 6),
    ]
    model = build_model("alexnet_twotower_bn")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert model.classifier[0].in_features == 9216


def test_flowers_bn_shapes():
    assert shapes("alexnet_flowers_bn") == [
        (96, 54, 54), (96, 27, 27), (256, 17, 17), (256, 8, 8),
        (384, 6, 6), (384, 4, 4), (256, 2, 2), (256, 1, 1),
    ]
    assert shapes("alexnet_flowers_bn", ("Linear",)) == [(4096,), (4096,), (1000,), (17,)]


def test_d2l_shapes_are_its_layer_summary():
    # d2l prints: Conv2d 96x54x54, MaxPool2d 96x26x26, Conv2d 256x26x26, MaxPool2d 256x12x12,
    # three Conv2d at 12x12, MaxPool2d 256x5x5, Flatten 6400.
    assert shapes("alexnet_d2l") == [
        (96, 54, 54), (96, 26, 26), (256, 26, 26), (256, 12, 12),
        (384, 12, 12), (384, 12, 12), (256, 12, 12), (256, 5, 5),
    ]
    assert build_model("alexnet_d2l").classifier[0].in_features == 6400


def kinds(sequence):
    return [type(m).__name__ for m in sequence]


@pytest.mark.slow
def test_where_batch_norm_sits():
    twotower = kinds(build_model("alexnet_twotower_bn").features)
    # conv1 and conv2: conv -> batch norm -> ReLU -> pool; conv3-5 none.
    assert twotower[:8] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] * 2
    assert twotower.count("BatchNorm2d") == 2
    flowers = build_model("alexnet_flowers_bn")
    # every block: conv -> ReLU -> (pool) -> batch norm
    assert kinds(flowers.features)[:8] == ["Conv2d", "ReLU", "MaxPool2d", "BatchNorm2d"] * 2
    assert kinds(flowers.features)[8:11] == ["Conv2d", "ReLU", "BatchNorm2d"]
    assert kinds(flowers.classifier) == ["Linear", "ReLU", "Dropout", "BatchNorm1d"] * 3 + ["Linear"]
    assert {m.p for m in flowers.classifier if isinstance(m, nn.Dropout)} == {0.4}
    # Keras' BatchNormalization: epsilon 1e-3, momentum 0.99 (PyTorch's 0.01)
    norms = [m for m in flowers.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 8 and {(m.eps, m.momentum) for m in norms} == {(1e-3, 0.01)}
    # Keras' convolutions keep their biases under batch norm
    assert all(m.bias is not None for m in build_model("alexnet_twotower_bn").modules() if isinstance(m, nn.Conv2d))
    for name in ("alexnet_keras_cifar", "alexnet_d2l"):
        assert not {"BatchNorm2d", "BatchNorm1d", "LocalResponseNorm"} & set(kinds(build_model(name).modules()))


@pytest.mark.slow
def test_fc_norm_is_a_switch_every_model_takes():
    plain = build_model("alexnet_paper")
    model = build_model("alexnet_paper", fc_norm="batch")
    assert kinds(model.classifier) == ["Linear", "ReLU", "Dropout", "BatchNorm1d"] * 2 + ["Linear"]
    assert model.options["fc_norm"] == "batch" and plain.options["fc_norm"] == "none"
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 2 * 4096 * 2
    # the torchvision order drops the inputs of FC6 and FC7; the batch norm still ends each block
    owt = build_model("alexnet_owt", fc_norm="batch")
    assert kinds(owt.classifier) == ["Dropout", "Linear", "ReLU", "BatchNorm1d"] * 2 + ["Linear"]
    assert build_model("alexnet_flowers_bn", fc_norm="none", norm="none").options["fc_norm"] == "none"
    x = torch.randn(2, 3, 227, 227)
    assert model(x).shape == (2, 1000)


def test_norm_switch_still_moves_the_tutorial_models():
    # --norm lrn puts the paper's LRN where the paper has it (conv1, conv2), for any of them
    lrn = kinds(build_model("alexnet_d2l", norm="lrn").features)
    assert lrn[:4] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"] and lrn.count("LocalResponseNorm") == 2
    # --norm batch on a network without any: batch norm between every conv and its ReLU, no bias
    batch = build_model("alexnet_keras_cifar", norm="batch")
    assert kinds(batch.features).count("BatchNorm2d") == 5
    assert all(m.bias is None for m in batch.features if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name", TUTORIAL_MODELS)
def test_glorot_uniform_init(name):
    torch.manual_seed(0)
    model = build_model(name)
    towers = model.towers
    for layer in (m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))):
        if isinstance(layer, nn.Conv2d):
            area = layer.kernel_size[0] * layer.kernel_size[1]
            # Keras' layer per tower: fan-out is one tower's kernels
            fan_in, fan_out = layer.in_channels // layer.groups * area, layer.out_channels // towers * area
        else:
            fan_in, fan_out = layer.in_features, layer.out_features
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert layer.weight.abs().max().item() <= bound * (1 + 1e-6)  # float32 rounding of the bound
        assert abs(layer.weight.std().item() / (bound / math.sqrt(3)) - 1) < 0.05  # U(-a, a): std a/sqrt(3)
        assert not layer.bias.any()


@pytest.mark.slow
def test_two_towers_draw_glorot_per_tower():
    # conv1 of the two-tower tutorial is two Keras layers of 48 kernels: a = sqrt(6 / (363 + 48*121)),
    # not nn.init.xavier_uniform_'s sqrt(6 / (363 + 96*121)).
    torch.manual_seed(0)
    conv1 = build_model("alexnet_twotower_bn").features[0]
    assert abs(conv1.weight.abs().max().item() - math.sqrt(6 / (363 + 48 * 121))) < 1e-4
    torch.manual_seed(0)
    one_tower = build_model("alexnet_twotower_bn", towers=1).features[0]
    assert abs(one_tower.weight.abs().max().item() - math.sqrt(6 / (363 + 96 * 121))) < 1e-4


def test_reset_classifier_keeps_glorot():
    torch.manual_seed(0)
    model = build_model("alexnet_d2l")
    model.reset_classifier(3)
    head = model.get_classifier()
    bound = math.sqrt(6 / (4096 + 3))
    assert 0.9 * bound < head.weight.abs().max().item() <= bound * (1 + 1e-6)
    assert not head.bias.any()


@pytest.mark.slow
@pytest.mark.parametrize("name", TUTORIAL_MODELS)
def test_forward_backward_on_two_images(name):
    torch.manual_seed(0)
    model = build_model(name)
    x = torch.randn(2, *model.input_size)
    logits = model(x)
    assert logits.shape == (2, model.num_classes) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


RECIPE_VALUES = {
    # model: (recipe, optimizer, lr, batch, epochs, momentum)
    "alexnet_keras_cifar": ("keras_cifar", "adam", 1e-3, 32, 10, None),
    "alexnet_twotower_bn": ("twotower_bn", "sgd", 1e-3, 1, 5, 0.0),
    "alexnet_flowers_bn": ("flowers_bn", "adam", 1e-3, 64, 1, None),
    "alexnet_d2l": ("d2l", "sgd", 0.01, 128, 10, 0.0),
}


@pytest.mark.parametrize("name", TUTORIAL_MODELS)
def test_each_trains_with_its_sources_recipe(name):
    from alexnet.models import default_recipe

    recipe_name, optimizer, lr, batch_size, epochs, momentum = RECIPE_VALUES[name]
    assert default_recipe(name) == recipe_name
    recipe = get_recipe(recipe_name)
    assert (recipe.optimizer, recipe.lr, recipe.batch_size, recipe.epochs) == (optimizer, lr, batch_size, epochs)
    if momentum is not None:
        assert recipe.momentum == momentum and not recipe.nesterov
    assert (recipe.weight_decay, recipe.schedule, recipe.augment, recipe.label_smoothing) == (0.0, "constant", "none", 0.0)
    assert not (recipe.ten_crop or recipe.flip_test) and recipe.model_options == {}


def test_cli_summary_of_d2l(capsys):
    from alexnet.cli import main

    assert main(["summary", "alexnet_d2l"]) == 0
    out = capsys.readouterr().out
    assert "46,764,746" in out and "938,146,176" in out and "256x5x5" in out
    assert main(["summary", "alexnet_flowers_bn", "--format", "json", "--fc-norm", "none"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["parameters"] == HAND_COUNTS["alexnet_flowers_bn"][0] - batch_norm(4096) * 2 - batch_norm(1000)


def test_freezing_conv1_2_takes_the_batch_norm_after_the_block():
    model = build_model("alexnet_flowers_bn")
    frozen = frozen_modules(model, "conv1-2")
    assert kinds(frozen) == ["Conv2d", "ReLU", "MaxPool2d", "BatchNorm2d"] * 2


@pytest.mark.slow
def test_weights_round_trip_keeps_the_options(tmp_path):
    from alexnet.weights import WeightsMetadata, load_weights, save_weights

    torch.manual_seed(0)
    model = build_model("alexnet_flowers_bn", num_classes=5).eval()
    metadata = WeightsMetadata(
        model="alexnet_flowers_bn", model_options=model.options, class_names=tuple("abcde"),
        input_size=(3, 224, 224), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), dataset="flowers17",
        test_views={"crop_fraction": 1.0, "views": "single"}, epochs=1, test_top1=0.5,
    )
    path = save_weights(tmp_path / "model.safetensors", model, metadata)
    loaded, _ = load_weights(path)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x), rtol=0, atol=0)


@pytest.mark.slow
def test_onnx_export_of_a_tutorial_model(tmp_path):
    pytest.importorskip("onnxruntime")
    from alexnet.export import export

    torch.manual_seed(0)
    model = build_model("alexnet_flowers_bn")
    model.train()
    with torch.no_grad():  # running statistics that are not the initial 0 and 1
        model(torch.randn(8, 3, 224, 224))
    result = export(model, "onnx", tmp_path / "flowers.onnx")
    assert result.max_abs_diff <= result.tolerance and result.top1_agreement == 1.0

    import onnxruntime

    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    image = torch.randn(1, 3, 224, 224)
    got = session.run(None, {session.get_inputs()[0].name: image.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model.eval()(image), rtol=1e-4, atol=1e-4)
