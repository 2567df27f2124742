"""The architecture table: per layer shape, parameters and multiply-accumulates, counted from the
model itself by running one image through it with forward hooks (on the meta device: shapes only)."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .errors import AlexNetError


@dataclass
class LayerRow:
    name: str  # module path, e.g. "features.0"
    kind: str  # Conv2d, Linear, LocalResponseNorm, MaxPool2d, ...
    geometry: str  # "11x11/4 pad 0, groups 2" for convolutions and pools, "" otherwise
    output_shape: tuple[int, ...]  # without the batch dimension
    parameters: int
    macs: int  # multiply-accumulates of one image (convolutions and linear layers only)


@dataclass
class Summary:
    model: str
    input_shape: tuple[int, int, int]
    rows: list[LayerRow] = field(default_factory=list)

    @property
    def parameters(self) -> int:
        return sum(row.parameters for row in self.rows)

    @property
    def macs(self) -> int:
        return sum(row.macs for row in self.rows)

    def split(self, kind: str) -> tuple[int, int]:
        """(parameters, MACs) of the layers of one kind ("Conv2d" or "Linear")."""
        rows = [row for row in self.rows if row.kind == kind]
        return sum(r.parameters for r in rows), sum(r.macs for r in rows)

    def to_dict(self) -> dict:
        conv, fc = self.split("Conv2d"), self.split("Linear")
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "layers": [asdict(row) | {"output_shape": list(row.output_shape)} for row in self.rows],
            "parameters": self.parameters,
            "macs": self.macs,
            "conv": {"parameters": conv[0], "macs": conv[1]},
            "fully_connected": {"parameters": fc[0], "macs": fc[1]},
        }


# The largest side summarised: an input shape is judged from shapes alone, but a side of 20,000
# (an extra digit) is a typo, not an image these networks are meant to see.
MAX_SIDE = 16_384


def summarize(model: nn.Module, input_shape: tuple[int, int, int] | None = None, name: str = "") -> Summary:
    """Run one image of ``input_shape`` (default: the model's own) through ``model`` and record every
    leaf layer's output shape, parameters and multiply-accumulates.

    The pass runs on a copy of the model on PyTorch's "meta" device, which computes shapes without
    memory or arithmetic: any input size costs nothing, and the model's weights are not copied.
    """
    input_shape = _check_shape(model, input_shape)
    summary = Summary(model=name or type(model).__name__, input_shape=input_shape)
    shapes = _meta_copy(model)
    names = {module: module_name for module_name, module in shapes.named_modules()}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        summary.rows.append(
            LayerRow(
                name=names[module],
                kind=type(module).__name__,
                geometry=_geometry(module),
                output_shape=tuple(output.shape[1:]),
                parameters=sum(p.numel() for p in module.parameters(recurse=False)),
                macs=_macs(module, output),
            )
        )

    for leaf in shapes.modules():
        if not list(leaf.children()) and leaf is not shapes:
            leaf.register_forward_hook(record)
    shapes.eval()
    try:
        with torch.no_grad():
            shapes(torch.empty(1, *input_shape, device="meta"))
    except RuntimeError as error:  # e.g. a pooling window larger than a too-small input
        if isinstance(error, AlexNetError):
            raise
        reason = str(error).splitlines()[0][:200]
        raise AlexNetError(f"input {'x'.join(map(str, input_shape))} does not fit {summary.model} ({reason}); "
                           f"give a larger --input") from None
    return summary


def _check_shape(model: nn.Module, input_shape) -> tuple[int, int, int]:
    shape = tuple(input_shape) if input_shape is not None else tuple(model.input_size)
    if len(shape) != 3 or not all(isinstance(side, int) and not isinstance(side, bool) for side in shape):
        raise AlexNetError(f"input shape must be three whole numbers (channels, height, width), got {shape!r:.60}")
    if min(shape) < 1:
        raise AlexNetError(f"input shape {shape} has a side below 1; give positive sizes, e.g. 3x224x224")
    channels = getattr(model, "input_size", (shape[0],))[0]
    if shape[0] != channels:
        raise AlexNetError(f"this model takes {channels}-channel images, got an input shape of {shape[0]} "
                           f"channel{'' if shape[0] == 1 else 's'} (give --input {channels}x{shape[1]}x{shape[2]}, "
                           f"or from Python build it with in_chans={shape[0]})")
    if max(shape[1:]) > MAX_SIDE:
        raise AlexNetError(f"input {shape[1]}x{shape[2]} is over {MAX_SIDE:,} pixels a side; give the size the "
                           f"images are cropped to, e.g. 224x224")
    return shape


def _meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers live on the meta device (no data)."""
    memo = {}
    for tensor in (*model.parameters(), *model.buffers()):
        empty = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(empty, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty
    return copy.deepcopy(model, memo)


def _macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return per_output * output[0].numel()
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return 0


def _geometry(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        k, s, p = module.kernel_size, module.stride, module.padding
        text = f"{k[0]}x{k[1]}/{s[0]} pad {p[0]}"
        return text + (f", groups {module.groups}" if module.groups > 1 else "")
    if isinstance(module, nn.MaxPool2d):
        k, s, p = module.kernel_size, module.stride, module.padding
        return f"{k}x{k}/{s} pad {p}"
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return f"to {module.output_size}"
    return ""


def format_summary(summary: Summary, style: str = "table") -> str:
    """Render as a plain-text ``table``, a GitHub ``markdown`` table, or ``json``."""
    if style == "json":
        return json.dumps(summary.to_dict(), indent=2)
    header = ("layer", "kind", "kernel/stride", "output", "parameters", "MACs")
    rows = [
        (r.name, r.kind, r.geometry, "x".join(map(str, r.output_shape)), f"{r.parameters:,}", f"{r.macs:,}")
        for r in summary.rows
    ]
    conv, fc = summary.split("Conv2d"), summary.split("Linear")
    total_p, total_m = summary.parameters, summary.macs
    totals = [
        ("total", "", "", "", f"{total_p:,}", f"{total_m:,}"),
        ("convolutions", "", "", "", f"{conv[0]:,} ({conv[0] / total_p:.1%})", f"{conv[1]:,} ({conv[1] / total_m:.1%})"),
        ("fully connected", "", "", "", f"{fc[0]:,} ({fc[0] / total_p:.1%})", f"{fc[1]:,} ({fc[1] / total_m:.1%})"),
    ]
    title = f"{summary.model}, input {'x'.join(map(str, summary.input_shape))}"
    if style == "markdown":
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows + totals]
        return "\n".join(lines)
    widths = [max(len(str(row[i])) for row in [header, *rows, *totals]) for i in range(len(header))]
    align = ["<", "<", "<", "<", ">", ">"]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(row, align, widths)).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([title, line(header), rule, *map(line, rows), rule, *map(line, totals)])
