"""Every fast option gives the plain path's results within tolerance (never its speed: no timings)."""

import pytest
import torch
from torch import nn

from alexnet import AlexNetError, build_model, perf
from alexnet.models import LocalResponseNorm
from alexnet.perf import (
    autocast_context, optimizer_options, precision_name, prepare_model, resolve_precision,
    set_threads, to_channels_last,
)

from test_models import lrn_by_the_formula


# -- LocalResponseNorm: the hand-written forward and backward against Section 3.3 ------------


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_fast_lrn_matches_the_formula_in_both_layouts(memory_format):
    torch.manual_seed(0)
    a = (torch.rand(2, 9, 4, 5, dtype=torch.float64) * 40).contiguous(memory_format=memory_format)
    torch.testing.assert_close(LocalResponseNorm()(a), lrn_by_the_formula(a), rtol=1e-12, atol=1e-12)
    towers = torch.cat([lrn_by_the_formula(a[:, :3]), lrn_by_the_formula(a[:, 3:6]),
                        lrn_by_the_formula(a[:, 6:])], 1)
    torch.testing.assert_close(LocalResponseNorm(groups=3)(a), towers, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("options", [{}, {"groups": 2}, {"size": 4, "beta": 0.6}, {"size": 3, "k": 1.0}])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_fast_lrn_gradient_is_exact(options, memory_format):
    torch.manual_seed(0)
    layer = LocalResponseNorm(**{**options, "alpha": 1e-2})  # alpha large enough to matter
    a = (torch.randn(2, 8, 3, 3, dtype=torch.float64) * 5).contiguous(memory_format=memory_format)
    assert torch.autograd.gradcheck(layer, (a.requires_grad_(),))


@pytest.mark.parametrize("options", [{}, {"size": 4, "beta": 0.6, "groups": 2}])
def test_fast_lrn_agrees_with_torch_in_fp32(options):
    """Against ``F.local_response_norm`` with the paper's alpha times n, forward and backward."""
    torch.manual_seed(0)
    size, beta = options.get("size", 5), options.get("beta", 0.75)
    x = torch.rand(4, 16, 13, 13) * 30
    grad = torch.randn_like(x)
    ours = x.clone().requires_grad_()
    LocalResponseNorm(**options)(ours).backward(grad)
    theirs = x.clone().requires_grad_()
    towers = options.get("groups", 1)
    reference = nn.functional.local_response_norm(theirs.reshape(4 * towers, 16 // towers, 13, 13),
                                                  size, 1e-4 * size, beta, 2.0).reshape(x.shape)
    reference.backward(grad)
    with torch.no_grad():
        torch.testing.assert_close(LocalResponseNorm(**options)(x), reference.detach())
    torch.testing.assert_close(ours.grad, theirs.grad)


def test_fast_lrn_trains_after_an_inference_pass():
    """The window matrix is cached; one made under inference_mode must still serve training."""
    layer = LocalResponseNorm(groups=2)
    x = torch.rand(1, 6, 2, 2) * 40
    with torch.inference_mode():
        expected = layer(x)
    y = layer(x.requires_grad_())
    y.sum().backward()
    torch.testing.assert_close(y.detach(), expected)
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_fast_lrn_in_bf16_is_the_formula_to_bf16_precision(memory_format):
    """bf16 input is normalised in bf16 (under autocast too): each output within about 1% of the
    formula in fp64 on the same bf16 values, the gradient within 1% of its largest entry, and
    inputs large enough that alpha * sum(a^2) is far from negligible against k."""
    torch.manual_seed(0)
    x = (torch.rand(2, 16, 6, 7) * 300).bfloat16().contiguous(memory_format=memory_format)
    grad = torch.randn(x.shape).bfloat16()
    ours = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = LocalResponseNorm(groups=2)(ours)
    y.backward(grad)
    exact = x.double().requires_grad_()
    expected = torch.cat([lrn_by_the_formula(exact[:, :8]), lrn_by_the_formula(exact[:, 8:])], 1)
    expected.backward(grad.double())
    assert y.dtype == ours.grad.dtype == torch.bfloat16
    scale = expected.detach() / x.double()
    assert scale.max() > 1.5 * scale.min()  # the normalisation differs from pixel to pixel
    torch.testing.assert_close(y.double(), expected.detach(), rtol=1.2e-2, atol=0)
    assert (ours.grad.double() - exact.grad).abs().max() < 1e-2 * exact.grad.abs().max()


def test_fast_lrn_computes_fp16_in_fp32():
    """fp16 squares overflow past 256; the layer squares in fp32 and hands back fp16."""
    x = torch.full((1, 5, 2, 2), 300.0)
    y = LocalResponseNorm()(x.half())
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), lrn_by_the_formula(x.double()).float(), rtol=1e-3, atol=0)


# -- precision, threads, optimiser ----------------------------------------------------------


def test_precision_is_chosen_by_hardware():
    assert resolve_precision("fp32", "cpu") is None
    assert resolve_precision("bf16", "cpu") is torch.bfloat16
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    fast = native and perf.cpu_bf16_speedup() >= perf.BF16_MIN_SPEEDUP
    assert resolve_precision("auto", "cpu") is (torch.bfloat16 if fast else None)
    assert precision_name(resolve_precision("auto", "cpu")) == ("bf16" if fast else "fp32")
    with pytest.raises(AlexNetError, match="auto, fp32, bf16, fp16"):
        resolve_precision("fp8", "cpu")
    with pytest.raises(AlexNetError, match="fp16 is for CUDA devices"):
        resolve_precision("fp16", "cpu")
    with autocast_context("cpu", None):
        assert not torch.is_autocast_enabled("cpu")
    with autocast_context("cpu", torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")


def test_auto_precision_needs_bf16_instructions_and_a_measured_gain(monkeypatch):
    # Having AVX512_BF16 is not enough: without AMX a Xeon multiplied bf16 at half its fp32 speed.
    assert perf.cpu_bf16_speedup.__wrapped__(size=64, repeats=1) > 0  # (uncached: a real measurement)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(perf, "cpu_bf16_speedup", lambda: 0.5)
    assert resolve_precision("auto", "cpu") is None
    monkeypatch.setattr(perf, "cpu_bf16_speedup", lambda: 2.7)
    assert resolve_precision("auto", "cpu") is torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert resolve_precision("auto", "cpu") is None  # emulated bf16 is never chosen
    assert resolve_precision("bf16", "cpu") is torch.bfloat16  # unless asked for


def test_set_threads():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert 1 <= set_threads() <= (torch.get_num_threads() or 1)
    finally:
        torch.set_num_threads(before)


def test_fused_optimizer_step_matches_the_plain_one():
    torch.manual_seed(0)
    plain, fused = build_model("alexnet_small28", dropout=0.0), build_model("alexnet_small28", dropout=0.0)
    fused.load_state_dict(plain.state_dict())
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for model, options in ((plain, {}), (fused, optimizer_options("cpu"))):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, **options)
        for _ in range(2):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    for a, b in zip(plain.parameters(), fused.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# -- the benchmark: its figures are consistent (never how large they are) ----------------------


@pytest.mark.slow
def test_benchmark_reports_consistent_figures():
    from alexnet.benchmark import format_result, run_benchmark

    result = run_benchmark("alexnet_owt", batch_size=2, input_shape=(3, 64, 64), repeats=2, warmup=0,
                           precision="fp32")
    assert result.precision == "fp32" and result.macs_per_image == result.baseline_macs_per_image
    for timing in (result.inference, result.training, result.baseline_inference, result.baseline_training):
        assert len(timing.seconds) == 2 and all(s > 0 for s in timing.seconds)
        slow, fast = timing.spread
        assert slow <= timing.images_per_second <= fast
        assert timing.gflops == pytest.approx(timing.images_per_second * timing.flops_per_image / 1e9)
    assert result.training.flops_per_image == 3 * result.inference.flops_per_image
    assert result.inference_ratio == pytest.approx(
        result.inference.images_per_second / result.baseline_inference.images_per_second)
    text = format_result(result)
    assert "torchvision alexnet" in text and "fp32" in text and result.machine["torch"] in text
    # The peers ran in the same run, in fp32 as ours did; the export-based ones only at the model's own size.
    assert set(result.peer_inference) == {"torchvision, fp32 cast, channels-last"}
    assert set(result.peer_training) == {"torchvision, fp32, channels-last, fused SGD"}
    name, fastest = result.fastest_peer("inference")
    assert result.peer_ratio("inference") == pytest.approx(
        result.inference.images_per_second / fastest.images_per_second)
    assert all(len(timing.seconds) == 2 for timing in [*result.peer_inference.values(), *result.peer_training.values()])
    assert f"ours / fastest peer (inference): {result.peer_ratio('inference'):.2f}x, against {name}" in text


@pytest.mark.slow
def test_benchmark_times_the_engines_on_our_exported_file():
    from alexnet.benchmark import run_benchmark
    from alexnet.peers import openvino_available

    result = run_benchmark("alexnet_owt", batch_size=1, repeats=1, warmup=0, precision="fp32")
    expected = {"torchvision, fp32 cast, channels-last", "ONNX Runtime fp32, our export"}
    if openvino_available():
        expected.add("OpenVINO fp32, our export")
    assert set(result.peer_inference) == expected
    # ONNX Runtime and OpenVINO run our network: credited with its arithmetic, not torchvision's
    assert result.peer_inference["ONNX Runtime fp32, our export"].flops_per_image == 2 * result.macs_per_image


def test_benchmark_command_refuses_what_the_baseline_cannot_run(capsys):
    from alexnet.cli import main

    # what to do instead: a larger --input where the model takes one, another model or train's log where not
    assert main(["benchmark", "--model", "alexnet_small28"]) == 2
    err = capsys.readouterr().err
    assert "3-channel images of at least 63x63; alexnet_small28 would be given 1x28x28" in err
    assert "takes only its own image size" in err and "alexnet train --model alexnet_small28" in err
    assert main(["benchmark", "--model", "alexnet_small32"]) == 2
    assert "takes only its own image size" in capsys.readouterr().err  # no --input it could take
    assert main(["benchmark", "--input", "3x32x32"]) == 2
    assert "alexnet_owt would be given 3x32x32: pass --input 3x63x63 or larger" in capsys.readouterr().err
    assert main(["benchmark", "--device", "tpu"]) == 2
    assert "device must be auto, cpu, cuda or cuda:N, got 'tpu'" in capsys.readouterr().err


# -- channels_last, bf16, compile: the same answers as the plain path --------------------------


@pytest.mark.parametrize("name,dtype,tolerance", [
    # In float64 the two layouts agree to rounding: the same arithmetic, in another order.
    ("alexnet_paper", torch.float64, 1e-10),
    # In float32 the paper's N(0, 0.01) initialisation makes conv1's gradient a sum of tiny terms
    # that cancel (1e-2 relative differences between two correct orders), so fp32 uses default init.
    ("alexnet_small28", torch.float32, 1e-4),
])
@pytest.mark.slow
def test_channels_last_gives_the_same_outputs_and_gradients(name, dtype, tolerance):
    torch.manual_seed(0)
    init = "paper" if dtype == torch.float64 else "default"
    plain = build_model(name, dropout=0.0, init=init).to(dtype)
    fast = build_model(name, dropout=0.0, init=init).to(dtype)
    fast.load_state_dict(plain.state_dict())
    prepare_model(fast, channels_last=True)
    x = torch.randn(2, *plain.input_size, dtype=dtype) * 3
    labels = torch.tensor([3, 7])
    for model, images in ((plain, x), (fast, to_channels_last(x))):
        nn.functional.cross_entropy(model(images), labels).backward()
    torch.testing.assert_close(fast(to_channels_last(x)), plain(x), rtol=tolerance, atol=tolerance)
    for a, b in zip(plain.parameters(), fast.parameters()):
        assert (b.grad - a.grad).abs().max() <= tolerance * a.grad.abs().max()


def test_bf16_autocast_agrees_with_fp32_on_top1():
    """Random weights with a fixed seed stand in for a trained model: a trained one agrees better
    (its logits are further apart), so this is the harder case."""
    torch.manual_seed(0)
    model = build_model("alexnet_small28", init="default").eval()
    x = torch.randn(256, 1, 28, 28)
    with torch.inference_mode():
        fp32 = model(x)
        with autocast_context("cpu", torch.bfloat16):
            bf16 = model(x)
    assert bf16.dtype == torch.bfloat16
    agreement = (bf16.float().argmax(1) == fp32.argmax(1)).float().mean().item()
    assert agreement >= 0.99  # 1.0 measured
    torch.testing.assert_close(bf16.float().softmax(1), fp32.softmax(1), rtol=0, atol=1e-3)


@pytest.mark.slow
def test_compiled_lrn_trains_in_bf16_as_eager_does():
    """A compiled graph gets LRN as plain operators (autocast cannot be switched off inside it):
    the same outputs and gradients as the eager layer's, to bf16 precision."""
    torch.manual_seed(0)
    layer = LocalResponseNorm(groups=2)
    x = (torch.rand(2, 8, 5, 5) * 100).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(2, 8, 5, 5)
    results = []
    for run in (layer, torch.compile(layer)):
        inputs = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = run(inputs.bfloat16())
        y.float().backward(grad)
        results.append((y.float(), inputs.grad))
    (eager, eager_grad), (compiled, compiled_grad) = results
    torch.testing.assert_close(compiled, eager, rtol=2e-2, atol=0)
    assert (compiled_grad - eager_grad).abs().max() < 2e-2 * eager_grad.abs().max()
    # fp16 is computed in fp32 in the graph too: its squares would overflow past 256.
    big = torch.full((1, 5, 2, 2), 300.0)
    with torch.autocast("cpu", dtype=torch.float16):
        y = torch.compile(LocalResponseNorm())(big.half())
    torch.testing.assert_close(y.float(), lrn_by_the_formula(big.double()).float(), rtol=1e-3, atol=0)


@pytest.mark.parametrize("name", ["alexnet_paper", "alexnet_small28", "alexnet_flowers_bn"])
def test_inference_weights_cast_once_compute_exactly_what_autocast_does(name):
    """The bf16 copies are what autocast would cast to, so logits are bit-identical; batch norm
    (alexnet_flowers_bn) and LRN (alexnet_paper) are left to autocast alike."""
    torch.manual_seed(0)
    model = prepare_model(build_model(name, init="default").eval())
    x = to_channels_last(torch.randn(3, *model.input_size))
    with torch.inference_mode(), autocast_context("cpu", torch.bfloat16):
        expected = model(x)
        with perf.inference_weights(model, torch.bfloat16):
            assert model.classifier[-1].weight.dtype == torch.bfloat16
            got = model(x)
    assert torch.equal(got, expected)


def test_inference_weights_leave_the_parameters_as_they_were():
    """The model's own parameters are never modified: after the pass, even one that failed, the
    same tensors (the optimiser's and DDP's references) hold the same fp32 values and train on."""
    model = build_model("alexnet_small28", init="default")
    before = {name: (parameter, parameter.detach().clone()) for name, parameter in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="interrupted"), perf.inference_weights(model, torch.bfloat16):
        raise RuntimeError("interrupted")
    with perf.inference_weights(model, None):  # fp32: nothing to cast
        assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    with pytest.raises(AlexNetError, match="resolve_precision"), perf.inference_weights(model, "bf16"):
        pass
    for name, parameter in model.named_parameters():
        assert parameter is before[name][0] and torch.equal(parameter, before[name][1])
    nn.functional.cross_entropy(model(torch.randn(2, 1, 28, 28)), torch.tensor([0, 1])).backward()
    optimizer.step()
    assert all(parameter.grad is not None for parameter in model.parameters())
    assert not torch.equal(model.classifier[-1].weight, before["classifier.6.weight"][1])


def test_inference_weights_leave_an_fp64_model_in_fp64():
    """Autocast casts only fp32; so does the cast made once."""
    model = build_model("alexnet_small28", init="default").double().eval()
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad(), autocast_context("cpu", torch.bfloat16), perf.inference_weights(model, torch.bfloat16):
        assert model.classifier[-1].weight.dtype == torch.float64
        assert model(x).dtype == torch.float64


@pytest.mark.slow
def test_compiled_model_matches_eager():
    torch.manual_seed(0)
    model = build_model("alexnet_small28", dropout=0.0)
    x = to_channels_last(torch.randn(4, 1, 28, 28))
    compiled = prepare_model(model, channels_last=True, compile=True)
    expected = model(x)
    expected.sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    got = compiled(x)
    got.sum().backward()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    for a, b in zip(eager_grads, model.parameters()):
        torch.testing.assert_close(b.grad, a, rtol=1e-3, atol=1e-5)


def test_usable_cpus_count_the_process_affinity_not_the_machine(monkeypatch):
    # a container's or a job's share (taskset, cgroups): the default count of decoding processes
    monkeypatch.setattr(perf.os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    monkeypatch.setattr(perf.os, "cpu_count", lambda: 64)
    assert perf.usable_cpus() == 2
