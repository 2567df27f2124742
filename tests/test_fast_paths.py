"""Every inference fast path computes what the plain path computes, on real Fashion-MNIST test images.

The plain path: the trained network in fp32, NCHW, eager, its parameters as trained. The fast
paths: channels-last, bf16 weights cast once under autocast (``inference_mode``), the model compiled
with its weights frozen in (``perf.compile_for_inference``), and ``evaluate_model`` with and without
compiling. Each gives logits within bf16 tolerance of the plain path's and the same top-1 class on
every image of a real batch. (Their speed is measured by ``alexnet benchmark``, never here.)
"""

import pytest
import torch
from torch import nn

from alexnet import build_model
from alexnet.data.augment import normalize, to_float
from alexnet.data.datasets import load_tensors
from alexnet.evaluation import evaluate_model
from alexnet.inference import inference_mode, predict_logits, worth_compiling
from alexnet.perf import autocast_context, prepare_model, resolve_precision, to_channels_last

BATCH = 256
# bf16 keeps 8 bits of mantissa: a logit is right to about 2^-8 of the largest ones it sums, and a
# trained network's logits reach ~10-20; 5% of the largest logit bounds what eight layers compound.
BF16_TOLERANCE = 0.05
MARGIN = 1.0  # logits between the first and second class of every image of the batch


@pytest.fixture(scope="module")
def trained():
    """alexnet_small28 (the paper's LRN included) trained for 200 steps on Fashion-MNIST, and a real
    test batch (B, 1, 28, 28) with its labels: trained logits are far enough apart for top-1 to be
    a fair comparison, as random weights' near-ties are not. Trained as ``alexnet train`` trains by
    default: channels-last, in bf16 where this machine runs it faster (the comparisons below are of
    the trained fp32 weights, whatever computed their updates)."""
    train = load_tensors("fashion-mnist", "train")
    test = load_tensors("fashion-mnist", "test")
    torch.manual_seed(0)
    model = prepare_model(build_model("alexnet_small28", init="default"), channels_last=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    fast = resolve_precision("auto", "cpu")
    for _ in range(200):
        chosen = torch.randint(0, len(train), (64,), generator=generator)
        images = to_channels_last(normalize(to_float(train.images[chosen]), train.mean, train.std))
        optimizer.zero_grad()
        with autocast_context("cpu", fast):
            loss = nn.functional.cross_entropy(model(images), train.labels[chosen])
        loss.backward()
        optimizer.step()
    model.to(memory_format=torch.contiguous_format).eval()
    images = normalize(to_float(test.images[:4 * BATCH]), test.mean, test.std)
    with torch.no_grad():
        plain = model(images)
    accuracy = (plain.argmax(1) == test.labels[:4 * BATCH]).float().mean().item()
    assert accuracy > 0.7, accuracy  # a trained network, not a lucky random one
    # The batch: the first BATCH test images the network decides by at least MARGIN logits. bf16
    # rounds each logit by ~1%, so a near-tie (either class as right as the other) may flip; an image
    # decided by a logit or more must not.
    top2 = plain.topk(2, dim=1).values
    decided = ((top2[:, 0] - top2[:, 1]) >= MARGIN).nonzero().squeeze(1)[:BATCH]
    assert len(decided) == BATCH
    return model, images[decided], test.labels[decided], plain[decided]


def _assert_same_answers(got: torch.Tensor, plain: torch.Tensor, tolerance: float) -> None:
    assert got.dtype == torch.float32 and got.shape == plain.shape
    scale = plain.abs().max().item()
    assert (got - plain).abs().max().item() <= tolerance * scale
    assert torch.equal(got.argmax(1), plain.argmax(1))


@pytest.mark.slow  # its fixture trains for 200 steps
@pytest.mark.parametrize("precision", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_eager_fast_path_computes_what_the_plain_path_does(trained, precision):
    model, images, _, plain = trained
    prepare_model(model, channels_last=True)
    try:
        with inference_mode(model, precision) as runner:
            got = predict_logits(runner, to_channels_last(images), "centre", precision=precision)
    finally:
        model.to(memory_format=torch.contiguous_format)
    _assert_same_answers(got, plain, BF16_TOLERANCE if precision else 1e-4)
    with torch.no_grad():  # the frame put the trained fp32 weights back
        assert torch.equal(model(images), plain)


@pytest.mark.slow
@pytest.mark.parametrize("precision", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_compiled_frozen_path_computes_what_the_plain_path_does(trained, precision):
    model, images, labels, plain = trained
    prepare_model(model, channels_last=True)
    try:
        with inference_mode(model, precision, compile=True) as runner:
            assert runner is not model
            got = predict_logits(runner, to_channels_last(images), "centre", precision=precision)
            mirrored = predict_logits(runner, to_channels_last(images), "mirror", precision=precision)
        with inference_mode(model, precision) as runner:
            eager_mirrored = predict_logits(runner, to_channels_last(images), "mirror", precision=precision)
        # evaluate, compiled or not, counts the same correct answers: two batches of the shape compiled
        # above (a new batch size is a new graph, and compiling one takes 10-30 s on a cold cache)
        loader = [(to_channels_last(images), labels), (to_channels_last(images.flip(-1)), labels)]
        compiled_metrics, _ = evaluate_model(model, loader, [str(c) for c in range(10)], precision=precision,
                                             compile=True)
        eager_metrics, _ = evaluate_model(model, loader, [str(c) for c in range(10)], precision=precision,
                                          compile=False)
    finally:
        model.to(memory_format=torch.contiguous_format)
    _assert_same_answers(got, plain, BF16_TOLERANCE if precision else 1e-4)
    _assert_same_answers(mirrored, eager_mirrored, BF16_TOLERANCE if precision else 1e-4)
    assert compiled_metrics.top1 == eager_metrics.top1
    with torch.no_grad():  # freezing folded copies: the model's own weights are the trained ones
        assert torch.equal(model(images), plain)


def test_compiling_is_automatic_only_for_passes_long_enough_to_pay():
    owt, small = build_model("alexnet_owt"), build_model("alexnet_small28")
    assert worth_compiling(owt, 50_000)  # ImageNet's validation set
    assert not worth_compiling(owt, 1)  # one image, never
    assert not worth_compiling(small, 10_000)  # Fashion-MNIST's test set on the small network
    assert not worth_compiling(owt, 5_000) and worth_compiling(owt, 5_000, "ten")  # ten views, ten passes
