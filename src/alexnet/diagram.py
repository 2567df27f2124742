"""A picture of the network, drawn from its architecture table: one column per layer, the paper's
two towers side by side (Figure 2), with each block's kernel, stride and output shape.

Drawn with matplotlib alone (imported when a picture is asked for): torchview and Keras's
``plot_model`` need Graphviz, a system package, and draw a node per operation, not per layer."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AlexNetError
from .runs import save_figure
from .summary import LayerRow, Summary

# What follows a convolution or FC layer, as the picture names it.
SHORT_NAMES = {"ReLU": "ReLU", "Tanh": "tanh", "LocalResponseNorm": "LRN", "BatchNorm2d": "batch norm", "BatchNorm1d": "batch norm",
               "Dropout": "dropout", "MaxPool2d": "max pool", "AdaptiveAvgPool2d": "avg pool"}
COLOURS = {"input": "#e8e8e8", "Conv2d": "#cfe2f3", "Linear": "#d9ead3", "output": "#fff2cc"}


@dataclass
class _Stage:
    """A convolution or FC layer and what follows it up to the next one."""

    row: LayerRow
    after: list[LayerRow] = field(default_factory=list)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.after[-1].output_shape if self.after else self.row.output_shape

    @property
    def tower_local(self) -> bool:
        return "groups" in self.row.geometry


def _stages(summary: Summary) -> list[_Stage]:
    stages: list[_Stage] = []
    for row in summary.rows:
        if row.kind in ("Conv2d", "Linear"):
            stages.append(_Stage(row))
        elif stages and row.kind != "Identity":
            stages[-1].after.append(row)
    return stages


def _shape(shape: tuple[int, ...], towers: int) -> str:
    """'48 @ 55x55' per tower, '4096' for vectors."""
    if len(shape) == 3:
        return f"{shape[0] // towers} @ {shape[1]}x{shape[2]}"
    return f"{shape[0]:,}"


def _follow_up(stage: _Stage) -> str:
    """'ReLU, LRN' then 'max pool 3x3/2' on its own line."""
    plain, pools = [], []
    for row in stage.after:
        name = SHORT_NAMES.get(row.kind, row.kind)
        if row.kind == "MaxPool2d":
            kernel, stride = re.match(r"(\d+x\d+)/(\d+)", row.geometry).groups()
            pools.append(f"{name} {kernel}/{stride}")
        elif row.kind == "AdaptiveAvgPool2d":
            pools.append(f"{name} to {row.output_shape[1]}x{row.output_shape[2]}")
        elif name not in plain:
            plain.append(name)
    return "\n".join(part for part in (", ".join(plain), *pools) if part)


def draw_network(summary: Summary, path: str | Path, towers: int = 1) -> Path:
    """Draw ``summary``'s network to ``path`` (.png, .svg or .pdf) and return the path.

    Every convolution is a column of ``towers`` blocks (each holding its share of the maps); arrows
    show which maps a layer sees: its own tower's only (``groups=2``), or both (conv3 and the fully
    connected layers in the paper)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch

    path = Path(path)
    stages = _stages(summary)
    if not stages:
        raise AlexNetError(f"{summary.model} has no convolution or fully connected layer to draw")
    columns = len(stages) + 1
    step, box_width = 1.75, 1.35
    # one band per tower (the paper's two GPUs), or one band in the middle; notes under the lowest
    bands = [(0.15, 1.0), (-1.0, -0.15)] if towers == 2 else [(-0.5, 0.5)]
    notes_top = bands[-1][0] - 0.15
    top = bands[0][1] + 0.2
    figure = Figure(figsize=(1.55 * columns + 0.4, 1.65 * (top - notes_top + 0.9)), dpi=150)
    axes = figure.add_axes((0.01, 0.0, 0.98, 0.88))
    axes.set_xlim(-0.85, step * (columns - 1) + 0.85)
    axes.set_ylim(notes_top - 0.9, top)
    axes.axis("off")

    def block(x: float, bottom: float, top: float, colour: str, lines: list[str]) -> tuple[float, float, float, float]:
        axes.add_patch(FancyBboxPatch((x - box_width / 2, bottom), box_width, top - bottom,
                                      boxstyle="round,pad=0.02,rounding_size=0.06", facecolor=colour,
                                      edgecolor="#555555", linewidth=0.9))
        middle = (bottom + top) / 2
        axes.text(x, middle + 0.13, lines[0], ha="center", va="center", fontsize=9.5, fontweight="bold")
        axes.text(x, middle - 0.1, "\n".join(lines[1:]), ha="center", va="top", fontsize=8.3, linespacing=1.3)
        return x - box_width / 2, x + box_width / 2, bottom, top

    def arrow(start, end) -> None:
        (_, right, low, high), (left, _, low2, high2) = start, end
        axes.annotate("", xy=(left, (low2 + high2) / 2), xytext=(right, (low + high) / 2),
                      arrowprops=dict(arrowstyle="-|>", color="#444444", linewidth=0.9, shrinkA=1, shrinkB=1))

    channels, height, width = summary.input_shape
    previous = [block(0.0, -0.5, 0.5, COLOURS["input"], ["input", f"{channels} @ {height}x{width}"])]
    convs = fcs = 0
    for index, stage in enumerate(stages, start=1):
        x = index * step
        last = index == len(stages)
        if stage.row.kind == "Conv2d":
            convs += 1
            title, kernel = f"conv{convs}", stage.row.geometry.split(",")[0].replace(" pad ", ", pad ")
            share = towers
            current = [block(x, low, high, COLOURS["Conv2d"],
                             [title if towers == 1 else f"{title} ({tower})", kernel,
                              _shape(stage.row.output_shape, share)])
                       for tower, (low, high) in zip(("top", "bottom"), bands)]
        else:
            fcs += 1
            title = f"FC{convs + fcs}"
            outputs = stage.row.output_shape[0]
            lines = [title, f"{outputs:,} classes" if last else f"{outputs:,} units"]
            current = [block(x, -0.5, 0.5, COLOURS["output" if last else "Linear"], lines)]
        local = stage.tower_local and len(previous) == len(current)
        for i, target in enumerate(current):
            for j, source in enumerate(previous):
                if not local or i == j:
                    arrow(source, target)
        notes = _follow_up(stage)
        if stage.row.kind == "Conv2d" and stage.output_shape != stage.row.output_shape:
            notes += f"\n-> {_shape(stage.output_shape, towers)}"
        macs = f"{stage.row.macs / 1e6:,.1f}M" if stage.row.macs >= 100_000 else f"{stage.row.macs:,}"
        notes += f"\n{stage.row.parameters:,} params\n{macs} MACs"
        axes.text(x, notes_top, notes.strip("\n"), ha="center", va="top", fontsize=7.8, color="#333333",
                  linespacing=1.35)
        previous = current

    figure.suptitle(f"{summary.model}: input {'x'.join(map(str, summary.input_shape))}, "
                    f"{summary.parameters:,} parameters, {summary.macs:,} multiply-accumulates per image",
                    fontsize=11, y=0.985)
    legend = "blocks: kernel/stride, maps @ height x width after the layer"
    if towers == 2:
        legend = ("two towers (the paper's two GPUs), each with half the maps; arrows from both blocks: the layer "
                  "sees both towers. " + legend.replace("maps", "maps per tower"))
    figure.text(0.5, 0.985 - 0.3 / figure.get_figheight(), legend, ha="center", fontsize=8.5, color="#444444")
    try:
        save_figure(figure, path)
    except ValueError as error:  # a format matplotlib does not write
        raise AlexNetError(f"cannot write {path} ({error}); choose another --plot") from None
    return path
