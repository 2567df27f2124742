"""The page of an ``alexnet experiment`` folder: the verdict, the arms' numbers, their curves.

Drawn from ``results.json`` alone (the arms' curves are in it), so the page can be rebuilt after
the run folders have been moved or deleted. Figures go to ``figures/*.png`` and into the page.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import AlexNetError
from ..formatting import counted, format_difference, format_spread
from .figures import plt, save_figure
from .html import Figure, figure_html, page_html

REPORT_NAME = "report.html"
VERDICT_COLOURS = {"agrees": "#1a7f37", "disagrees": "#cf222e", "inconclusive": "#9a6700"}


def is_experiment_folder(directory: str | Path) -> bool:
    path = Path(directory) / "results.json"
    if not path.is_file():
        return False
    try:
        return "experiment" in json.loads(path.read_text())
    except (OSError, ValueError):
        return False


def read_results(directory: str | Path) -> dict:
    path = Path(directory) / "results.json"
    try:
        results = json.loads(path.read_text())
    except OSError as error:
        raise AlexNetError(f"cannot read {path}: {error.strerror}; run the experiment first") from None
    except ValueError:
        raise AlexNetError(f"{path} is not valid JSON; run the experiment again to rewrite it") from None
    if not isinstance(results, dict) or "experiment" not in results or "arms" not in results:
        raise AlexNetError(f"{path} is not an experiment's results.json")
    return results


# --- figures ------------------------------------------------------------------------------------


def _band(axis, curves: Sequence[Sequence[float]], colour: str, label: str, style: dict, offset: float = 0.0) -> None:
    """Mean over seeds, and the band between the lowest and highest seed, in percent; point i at
    epoch i + 1 - offset (0.5: an average over the epoch, drawn at its middle)."""
    length = min(len(curve) for curve in curves)
    if length == 0:
        return
    values = 100 * np.array([curve[:length] for curve in curves])
    epochs = np.arange(1, length + 1) - offset
    axis.plot(epochs, values.mean(0), color=colour, label=label, **style)
    if len(curves) > 1:
        axis.fill_between(epochs, values.min(0), values.max(0), color=colour, alpha=0.15, linewidth=0)


def arm_curves(results: dict):
    """Training and validation error of every arm against epochs, on shared axes (mean, min-max band).

    For ``relu`` the training error panel is the paper's Figure 1: the 25% line it times."""
    figure, (train_axis, val_axis) = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for index, (name, arm) in enumerate(results["arms"].items()):
        curves = arm.get("curves") or {}
        if not curves.get("train_errors"):
            continue
        colour = f"C{index % 10}"
        _band(train_axis, curves["train_errors"], colour, arm["label"], dict(linestyle="-" if index == 0 else "--",
                                                                             marker="o"), offset=0.5)
        _band(val_axis, curves["val_errors"], colour, arm["label"], dict(linestyle="-" if index == 0 else "--",
                                                                         marker="s"))
    if results.get("threshold"):
        train_axis.axhline(100 * results["threshold"], color="tab:gray", linewidth=1)
        train_axis.text(0.5, 100 * results["threshold"], f" {results['threshold']:.0%} training error", va="bottom",
                        color="tab:gray", fontsize=8)
    train_axis.set(title="training error (each epoch's average, at its middle)", xlabel="epochs", ylabel="error (%)")
    val_axis.set(title="validation error (end of each epoch)", xlabel="epochs")
    for axis in (train_axis, val_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_ylim(bottom=0)
    train_axis.legend(fontsize=8)
    figure.suptitle(f"{results['experiment']}: {counted(results['seeds'], 'seed')}, mean and min-max", fontsize=10)
    figure.tight_layout()
    return figure


def differences(results: dict):
    """Each comparison's mean paired difference with its 95% interval; the shaded side is the paper's."""
    comparisons = [c for c in results["comparisons"] if c["mean"] is not None]
    figure, axis = plt.subplots(figsize=(8, 0.6 + 0.55 * max(1, len(comparisons))))
    for row, comparison in enumerate(comparisons):
        scale = 100 if comparison["unit"] == "%" else 1
        mean = comparison["mean"] * scale
        colour = VERDICT_COLOURS[comparison["verdict"]]
        if comparison["interval"]:
            low, high = (value * scale for value in comparison["interval"])
            axis.errorbar(mean, row, xerr=[[mean - low], [high - mean]], fmt="o", color=colour, capsize=4)
        else:
            axis.plot(mean, row, "o", color=colour)
        for value in comparison["differences"]:
            axis.plot(value * scale, row, "|", color=colour, alpha=0.6, markersize=10)
    labels = [f"{results['arms'][c['other']]['label']} - {results['arms'][c['reference']]['label']}\n"
              f"{c['label']} ({'points' if c['unit'] == '%' else 'epochs'})" for c in comparisons]
    axis.set_yticks(range(len(comparisons)), labels, fontsize=7)
    axis.axvline(0, color="black", linewidth=0.8)
    axis.invert_yaxis()
    axis.grid(axis="x", alpha=0.3)
    axis.set_title("paired differences by seed (ticks), mean and 95% interval; colour: verdict", fontsize=9)
    figure.tight_layout()
    return figure


# --- the page -------------------------------------------------------------------------------------


def build_experiment_report(directory: str | Path) -> Path:
    """Write ``report.html`` and ``figures/*.png`` into an experiment folder; returns the page's path."""
    directory = Path(directory)
    results = read_results(directory)
    drawn = []
    for key, title, caption, make in (
        ("curves", "The arms' curves", "Mean over seeds, with the band between the lowest and the highest seed.",
         arm_curves),
        ("differences", "Differences and verdicts", "Each seed's paired difference, their mean and its 95% "
         "Student-t interval; green: agrees with the paper, red: disagrees, amber: inconclusive.", differences),
    ):
        path = save_figure(make(results), directory / "figures" / f"{key}.png")
        drawn.append(Figure(key, title, caption, path))
    e = html.escape
    verdict = results["verdict"]
    measure_keys = list(dict.fromkeys(key for arm in results["arms"].values() for key in arm["measures"]))
    units = {c["measure"]: (c["label"], c["unit"]) for c in results["comparisons"]}
    header = "".join(f"<th>{e(units.get(key, (key, ''))[0])}</th>" for key in measure_keys)
    rows = "".join(
        f"<tr><td>{e(arm['label'])}</td>" + "".join(
            f"<td class=\"number\">{e(format_spread(arm['measures'][key], units.get(key, ('', '%'))[1]))}</td>"
            if key in arm["measures"] else "<td>n/a</td>" for key in measure_keys) + "</tr>"
        for arm in results["arms"].values())
    arms_table = f"<table><tr><th>arm</th>{header}</tr>{rows}</table>"
    comparison_rows = "".join(
        f"<tr><td>{e(results['arms'][c['other']]['label'])} - {e(results['arms'][c['reference']]['label'])}</td>"
        f"<td>{e(c['label'])}</td><td class=\"number\">{e(format_difference(c))}</td><td>{e(c['paper'] or '-')}</td>"
        f"<td style=\"color:{VERDICT_COLOURS[c['verdict']]}\"><b>{e(c['verdict'])}</b></td></tr>"
        for c in results["comparisons"])
    comparisons_table = ("<table><tr><th>comparison</th><th>measure</th><th>difference (mean, 95% CI)</th>"
                         f"<th>paper</th><th>verdict</th></tr>{comparison_rows}</table>")
    runs = "".join(f"<li><code>{e(run)}</code></li>" for arm in results["arms"].values() for run in arm["runs"])
    sections = [
        ("The claim", f"<p>{e(results['statement'])} (Section {e(results['section'])}). Paper: {e(results['paper'])}."
                      f"</p><p style=\"font-size:1.2em;color:{VERDICT_COLOURS[verdict]}\"><b>Verdict: {e(verdict)}"
                      f"</b></p><p>Rule: {e(results['rule'])}.</p>"),
        ("Arms", arms_table),
        ("Comparisons", comparisons_table),
        ("Figures", "\n".join(figure_html(figure, directory) for figure in drawn)),
        ("Where this setting differs from the paper's", f"<p>{e(results['transfer'])}.</p>"),
        ("Runs", f"<p>Each is an ordinary run folder (<code>alexnet report RUN_DIR</code>, <code>alexnet evaluate "
                 f"RUN_DIR</code>).</p><ul>{runs}</ul><p>Rerun: <code>alexnet experiment {e(results['experiment'])} "
                 f"--dataset {e(results['dataset'])} --model {e(results['model'])} --seeds {results['seeds']} --epochs "
                 f"{results['epochs']} --subset {results['subset']:g}</code></p>"),
    ]
    subtitle = (f"{results['model']} on {results['subset']:g} of {results['dataset']}, "
                f"{counted(results['epochs'], 'epoch')}, {counted(results['seeds'], 'seed')}; "
                f"written {time.strftime('%Y-%m-%d %H:%M')} from {directory.resolve()}")
    path = directory / REPORT_NAME
    path.write_text(page_html(f"Experiment {results['experiment']}", subtitle, sections), encoding="utf-8")
    return path
