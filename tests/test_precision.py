"""The precision choice on GPUs, with the device queries mocked: bf16 only where the GPU has it
natively, fp16 with a gradient scaler elsewhere, fp16 refused off CUDA."""

from unittest import mock

import pytest
import torch

from alexnet import AlexNetError
from alexnet.perf import gradient_scaler, precision_name, recorded_precision, resolve_precision
from alexnet.training import TrainConfig


def cuda(native_bf16: bool):
    """torch.cuda as a GPU with (A100, H100) or without (T4, V100) native bf16 would answer."""
    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return native_bf16 or including_emulation  # emulated bf16 counts only when asked to

    return mock.patch.multiple(torch.cuda, is_available=mock.Mock(return_value=True),
                               is_bf16_supported=mock.Mock(side_effect=is_bf16_supported))


def test_auto_is_bf16_on_native_bf16_gpus_and_fp16_on_the_others():
    with cuda(native_bf16=True):
        assert resolve_precision("auto", "cuda:0") == torch.bfloat16
        assert torch.cuda.is_bf16_supported.call_args.kwargs == {"including_emulation": False}
    with cuda(native_bf16=False):
        assert resolve_precision("auto", "cuda:0") == torch.float16
        assert resolve_precision("bf16", "cuda:0") == torch.bfloat16  # asked for: given, slow or not
        assert resolve_precision("fp32", "cuda") is None


def test_fp16_is_for_cuda_and_a_recorded_fp16_is_fp32_off_cuda():
    with cuda(native_bf16=True):
        assert resolve_precision("fp16", "cuda:0") == torch.float16
    with pytest.raises(AlexNetError, match="precision fp16 is for CUDA devices, and this runs on cpu"):
        resolve_precision("fp16", "cpu")
    assert recorded_precision("fp16", "cpu") is None
    assert recorded_precision("bf16", "cpu") == torch.bfloat16
    assert [precision_name(d) for d in (torch.float16, torch.bfloat16, None)] == ["fp16", "bf16", "fp32"]
    assert TrainConfig(precision="fp16").resolved().precision == "fp16"  # a valid name; the device decides


def test_only_fp16_scales_the_loss():
    assert not gradient_scaler("cpu", torch.bfloat16).is_enabled()
    assert not gradient_scaler("cpu", None).is_enabled()
    with cuda(native_bf16=False):
        assert gradient_scaler("cuda:0", torch.float16).is_enabled()
        assert not gradient_scaler("cuda:0", torch.bfloat16).is_enabled()
