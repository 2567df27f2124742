"""The model family: the paper's numbers, torchvision equivalence, the switches, bad input."""


import pytest
import torch
import torchvision
from torch import nn

from alexnet import AlexNetError, build_model, list_models, summarize
from alexnet.models import LocalResponseNorm

# (model, options, input, parameters, multiply-accumulates) -- the counts from the paper's layer
# sizes (Section 3.5) and torchvision's AlexNet, worked out by hand.
EXPECTED_COUNTS = [
    ("alexnet_paper", {}, (3, 227, 227), 60_965_224, 724_406_816),
    ("alexnet_owt", {}, (3, 224, 224), 61_100_840, 714_188_480),
    ("alexnet_paper", {"towers": 1}, (3, 227, 227), 62_378_344, 1_135_256_096),
    ("alexnet_tutorial28", {}, (1, 28, 28), 57_840_330, None),
]


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_forward_and_backward(name):
    model = build_model(name)
    x = torch.randn(2, *model.input_size)
    logits = model(x)
    assert logits.shape == (2, model.num_classes)
    logits.logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name,options,shape,params,macs", EXPECTED_COUNTS)
def test_parameter_and_mac_counts(name, options, shape, params, macs):
    model = build_model(name, **options)
    assert sum(p.numel() for p in model.parameters()) == params
    summary = summarize(model, shape)
    assert summary.parameters == params
    if macs is not None:
        assert summary.macs == macs


def test_summary_splits_like_the_paper():
    summary = summarize(build_model("alexnet_paper", towers=1))
    conv_params, conv_macs = summary.split("Conv2d")
    fc_params, fc_macs = summary.split("Linear")
    # The FC layers hold ~94% of the parameters, the convolutions do ~95% of the arithmetic.
    assert 0.93 < fc_params / summary.parameters < 0.95
    assert 0.94 < conv_macs / summary.macs < 0.96
    shapes = [row.output_shape for row in summary.rows if row.kind in ("Conv2d", "MaxPool2d")]
    assert shapes[:2] == [(96, 55, 55), (96, 27, 27)]
    assert shapes[-1] == (256, 6, 6)


def lrn_by_the_formula(a, n=5, alpha=1e-4, beta=0.75, k=2.0):
    """Section 3.3, one channel at a time."""
    channels = a.shape[1]
    b = torch.empty_like(a)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        b[:, i] = a[:, i] / (k + alpha * (a[:, lo : hi + 1] ** 2).sum(1)) ** beta
    return b


def test_local_response_norm_matches_the_papers_formula():
    torch.manual_seed(0)
    a = torch.rand(2, 7, 3, 3, dtype=torch.float64) * 40  # large activations make alpha matter
    expected = lrn_by_the_formula(a)
    torch.testing.assert_close(LocalResponseNorm()(a), expected)
    # torch's layer with the same alpha averages instead of summing: not the paper's layer.
    assert not torch.allclose(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(a), expected)


def test_local_response_norm_keeps_towers_apart():
    a = torch.rand(1, 8, 2, 2, dtype=torch.float64) * 40
    per_tower = torch.cat([lrn_by_the_formula(a[:, :4]), lrn_by_the_formula(a[:, 4:])], 1)
    torch.testing.assert_close(LocalResponseNorm(groups=2)(a), per_tower)


def test_owt_loads_torchvision_weights_and_matches_outputs():
    torch.manual_seed(0)
    reference = torchvision.models.alexnet().eval()
    ours = build_model("alexnet_owt").eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(reference.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)
        # torchvision's adaptive pool accepts other sizes; so does ours.
        torch.testing.assert_close(ours(x[..., :200, :200]), reference(x[..., :200, :200]))


def test_paper_initialisation():
    torch.manual_seed(0)
    model = build_model("alexnet_paper")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    for layer in convs + linears:
        assert abs(layer.weight.std().item() - 0.01) < 0.0005
        assert abs(layer.weight.mean().item()) < 0.0005
    bias_values = [layer.bias.unique().tolist() for layer in convs + linears]
    assert bias_values == [[0.0], [1.0], [0.0], [1.0], [1.0], [1.0], [1.0], [0.0]]


def test_paper_layer_order():
    kinds = [type(m).__name__ for m in build_model("alexnet_paper").features]
    assert kinds[:4] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]  # LRN after the ReLU
    classifier = [type(m).__name__ for m in build_model("alexnet_paper").classifier]
    assert classifier == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]


@pytest.mark.parametrize("name", list_models())
def test_shared_interface(name):
    model = build_model(name).eval()
    x = torch.randn(3, *model.input_size)
    features = model.forward_features(x)
    assert features.dim() == 4
    pre_logits = model.forward_head(features, pre_logits=True)
    assert pre_logits.shape == (3, model.num_features)
    torch.testing.assert_close(model.forward_head(features), model(x))
    model.reset_classifier(7)
    assert model(x).shape == (3, 7)


@pytest.mark.parametrize(
    "options",
    [
        {"activation": "tanh"}, {"norm": "batch"}, {"norm": "none"}, {"pooling": "non-overlapping"},
        {"dropout": 0.0}, {"towers": 1}, {"num_classes": 17}, {"in_chans": 1}, {"init": "kaiming"},
    ],
)
def test_switches(options):
    model = build_model("alexnet_paper", **options)
    x = torch.randn(2, *model.input_size)
    assert model(x).shape == (2, options.get("num_classes", 1000))
    kinds = {type(m).__name__ for m in model.modules()}
    if options.get("activation") == "tanh":
        assert "Tanh" in kinds and "ReLU" not in kinds
    if options.get("norm") == "batch":
        assert "BatchNorm2d" in kinds and "LocalResponseNorm" not in kinds
    if options.get("norm") == "none":
        assert not {"BatchNorm2d", "LocalResponseNorm"} & kinds
    if options.get("pooling"):
        assert all(m.kernel_size == 2 for m in model.modules() if isinstance(m, nn.MaxPool2d))


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(AlexNetError, match="alexnet_paper.*alexnet_small28"):
        build_model("alexnet_papr")


@pytest.mark.parametrize("bad", [{"norm": "group"}, {"towers": 3}, {"dropout": 1.5}, {"depth": 3}])
def test_bad_options_are_refused(bad):
    with pytest.raises(AlexNetError):
        build_model("alexnet_paper", **bad)


def test_wrong_input_says_what_the_model_expects():
    model = build_model("alexnet_paper")
    with pytest.raises(AlexNetError, match="227x227"):
        model(torch.randn(1, 3, 224, 224))
    with pytest.raises(AlexNetError, match=r"\(B, 3, 227, 227\)"):
        model(torch.randn(1, 1, 227, 227))
    with pytest.raises(AlexNetError, match="too small"):
        build_model("alexnet_owt")(torch.randn(1, 3, 32, 32))


@pytest.mark.slow
def test_cli_summary_and_models(capsys):
    from alexnet.cli import main

    assert main(["summary", "alexnet_paper"]) == 0
    out = capsys.readouterr().out
    assert "60,965,224" in out and "724,406,816" in out
    assert main(["summary", "alexnet_owt", "--format", "json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["parameters"] == 61_100_840 and data["macs"] == 714_188_480
    assert main(["summary", "no_such_model"]) == 2
    assert "Known models" in capsys.readouterr().err
    assert main(["models"]) == 0
    assert set(list_models()) <= set(capsys.readouterr().out.split())


def test_kaiming_initialisation_of_the_small_variants():
    torch.manual_seed(0)
    model = build_model("alexnet_small28")
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for layer in layers[:-1]:
        fan_in = layer.weight[0].numel()
        assert abs(layer.weight.std().item() / (2 / fan_in) ** 0.5 - 1) < 0.1
        assert not layer.bias.any()
    assert abs(layers[-1].weight.std().item() - 0.01) < 0.002
