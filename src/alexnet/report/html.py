"""``report.html``: one self-contained page per run (and one for several runs side by side).

The page is rebuilt from the run folder alone (``config.yaml``, ``metrics.jsonl``,
``evaluation.json``, ``model.safetensors``), so it works for a copied or resumed run. Figures that
need the model and the dataset are drawn only when both can be loaded; otherwise the page says
what is missing and shows the rest. Every figure is also written as a PNG under ``figures/``, and
embedded in the page as a base64 data URI so the file can be mailed or opened offline.
Numbers in the tables carry their exact value in a ``data-value`` attribute.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path


from ..errors import AlexNetError
from ..inference import trained_data_dir
from ..runs import RunFolder, write_text
from ..weights import WeightsMetadata, read_metadata
from . import figures

REPORT_NAME = "report.html"
FIGURES_DIR = "figures"
TEST_LIMIT = 10_000  # test images whose predictions are shown and searched for mistakes
POOL_SIZE = 5_000  # training images searched for nearest neighbours (FC7 features; ~5 s on 2 CPU cores)
GRID_IMAGES = 24  # images in the prediction and mistake grids (three rows of eight)
EXPLAINED_MISTAKES = 6  # Grad-CAM of the most confident mistakes: one row
EXPLAINED_CLASSES = 12  # Grad-CAM of one correct image per class, for at most this many classes
PATCH_IMAGES = 2_000  # test images searched for the top patches of conv5's filters (bounded by test_limit)
PATCH_FILTERS = 8  # conv5 filters shown, those with the strongest patches
# The figures of the section "Inside the network", in page order (the others go under "Figures").
INSIDE_FIGURES = ("gradcam_mistakes", "gradcam_classes", "top_patches")

log = logging.getLogger(__name__)


# --- reading a run folder ---------------------------------------------------------------------


@dataclass
class RunFiles:
    """What a run folder holds, read without touching the model or the data."""

    folder: RunFolder
    config: dict
    history: list[dict]
    evaluation: dict | None
    metadata: WeightsMetadata | None
    missing: list[str] = field(default_factory=list)  # what could not be read, and why

    @property
    def directory(self) -> Path:
        return self.folder.directory

    @property
    def name(self) -> str:
        return self.directory.name

    @property
    def weights(self) -> Path:
        return self.folder.weights


def read_run(run_dir: str | Path) -> RunFiles:
    """Read a run folder's configuration, per-epoch metrics, test metrics and weights metadata.

    A ``config.yaml`` that cannot be read is an ``AlexNetError`` naming it (the page would be about
    nothing); unreadable lines of ``metrics.jsonl`` and an unreadable ``evaluation.json`` are left
    out, and the page says so, as it does for missing ones.
    """
    folder = RunFolder(Path(run_dir))
    config = folder.read_config()
    missing = []
    history, dropped = folder.read_history()
    if dropped:
        missing.append(dropped)
    if not history:
        missing.append("metrics.jsonl has no epochs yet: no training curves")
    evaluation, problem = folder.read_evaluation()
    if problem == "no evaluation.json":
        missing.append("no evaluation.json (the run has not finished): no test metrics")
    elif problem:
        missing.append(f"evaluation.json is unreadable ({problem}), so it is left out: no test metrics")
    metadata = None
    try:
        metadata = read_metadata(folder.weights)
    except AlexNetError as error:
        missing.append(f"no usable model.safetensors ({error}): no predictions, filters or neighbours")
    return RunFiles(folder, config, history, evaluation, metadata, missing)


def run_data_dir(run: RunFiles) -> str | None:
    """Where the run found its dataset: its weights' ``data_dir``, else its config.yaml's (as
    ``inference.TrainedModel.data_dir`` decides for every command that uses the weights)."""
    return trained_data_dir(run.metadata, run.folder)


# --- the figures ------------------------------------------------------------------------------


@dataclass
class Figure:
    key: str  # file stem under figures/
    title: str
    caption: str
    path: Path


def build_figures(run: RunFiles, *, data_dir: str | Path | None = None, device: str = "auto",
                  test_limit: int = TEST_LIMIT, pool_size: int = POOL_SIZE) -> tuple[list[Figure], list[str]]:
    """Draw every figure the run folder allows into ``figures/``; returns them and what is missing."""
    out = run.directory / FIGURES_DIR
    drawn: list[Figure] = []
    missing: list[str] = []

    def draw(key: str, title: str, caption: str, make: Callable[[], object]) -> None:
        try:
            figure = make()
        except Exception as error:  # one broken figure must not cost the others
            missing.append(f"{title}: {error}")
            log.warning("report: %s failed: %s", title, error)
            return
        path = out / f"{key}.png"
        if isinstance(figure, Path):  # drawn straight to a file (the augmentation preview)
            path = figure
        else:
            figures.save_figure(figure, path)
        drawn.append(Figure(key, title, caption, path))

    if run.history:
        draw("training_curves", "Training curves",
             "Loss and top-1 accuracy per epoch on the training batches (as trained: augmented, dropout on) "
             "and on the held-out validation images; the learning rate at the end of each epoch.",
             lambda: figures.training_curves(run.history))
    if run.evaluation:
        evaluation = run.evaluation
        draw("confusion_matrix", "Confusion matrix",
             "Test set: rows are the true class, columns the prediction; each cell gives the count and "
             "its share of the row.",
             lambda: figures.confusion_matrix(evaluation["confusion_matrix"], evaluation["class_names"]))
        draw("per_class_scores", "Per-class scores", "Test-set precision, recall and F1 of every class.",
             lambda: figures.per_class_scores(evaluation["precision"], evaluation["recall"], evaluation["f1"],
                                              evaluation["class_names"]))
    if run.metadata is not None:
        missing += _model_figures(run, draw, data_dir=data_dir, device=device, test_limit=test_limit,
                                  pool_size=pool_size)
    dataset = run.config.get("dataset")
    if dataset:
        def preview():
            from ..data.preview import augment_preview

            out.mkdir(parents=True, exist_ok=True)  # the preview writes into an existing folder only
            return augment_preview(dataset, out / "augmentation.png", data_dir=data_dir or run_data_dir(run),
                                   seed=run.config.get("seed", 0), extra=run.config.get("augment"))

        draw("augmentation", "Augmentation preview",
             f"Real {dataset} training images under each augmentation alone, the presets, and this run's "
             f"({run.config.get('augment')}).", preview)
    return drawn, missing


def _model_figures(run: RunFiles, draw, *, data_dir, device: str, test_limit: int, pool_size: int) -> list[str]:
    """Filters (needs the weights), predictions, mistakes and neighbours (need the data too)."""
    from ..data import build_loaders
    from ..evaluation import test_loader
    from ..inference import open_trained
    from . import predictions

    try:  # in the precision the run tested in, as `alexnet evaluate` computes
        trained = open_trained(run.weights, device=device)
    except AlexNetError as error:
        return [f"the model could not be loaded ({error}): no predictions, filters or neighbours"]
    model, metadata, torch_device = trained.model, trained.metadata, trained.device
    towers = getattr(model, "towers", 1)
    draw("filters", "First-layer filters",
         f"The {predictions.first_conv_weights(model).shape[0]} kernels of the first convolution (the paper's "
         f"Figure 3)" + (", one block per tower (the paper's two GPUs)." if towers > 1 else "."),
         lambda: figures.first_layer_filters(predictions.first_conv_weights(model), towers))

    name = metadata.dataset or run.config.get("dataset")
    classes = list(metadata.class_names)
    # The thumbnails and FC7 features are of the image a test sees: with the paper's ten views, the
    # centre crop (its probabilities are the centre crop's too; evaluation.json has the ten views').
    views = trained.views.choose(ten_crop=False)
    options = trained.loader_options(batch_size=500, data_dir=data_dir or None)  # ``name`` is the weights' own
    try:
        test_images, _ = test_loader(name, views, tuple(model.input_size), options)
    except AlexNetError as error:
        return [f"dataset {name!r} is not available here, so the figures of predictions, mistakes and "
                f"nearest neighbours are left out. {error}"]
    mean, std, dtype = metadata.mean, metadata.std, trained.precision
    try:
        test = predictions.collect_outputs(model, test_images, mean, std, limit=test_limit, views=views,
                                           precision=dtype)
    except AlexNetError as error:
        return [f"test images of {name!r}: {error}; no predictions, mistakes or nearest neighbours"]
    predicted = test.probabilities.argmax(1)
    confidence = test.probabilities.max(1)
    shown = slice(0, GRID_IMAGES)
    accuracy = float((predicted == test.labels).mean())
    draw("predictions", "Test predictions",
         f"The first {min(GRID_IMAGES, len(test))} test images: true class, then the prediction and its "
         f"probability (red: wrong). Top-1 on these {len(test):,} test images: {accuracy:.2%}.",
         lambda: figures.prediction_grid(test.thumbnails[shown], test.labels[shown], predicted[shown],
                                         confidence[shown], classes))
    draw("mistakes", "Most confident mistakes",
         f"Of the first {len(test):,} test images, the wrong predictions made with the highest probability.",
         lambda: figures.confident_mistakes(test.thumbnails, test.labels, test.probabilities, classes,
                                            count=GRID_IMAGES))
    try:
        _inside_figures(draw, model, metadata, test_images, test, classes, torch_device, test_limit)
    except Exception as error:  # the views inside the network must not cost the figures after them
        log.warning("report: Grad-CAM and top patches failed: %s", error)
        inside_missing = [f"Grad-CAM and top patches: {error}"]
    else:
        inside_missing = []
    try:  # a fixed, seeded sample of the training images, cropped as the test images are
        train = build_loaders(name, replace(options, output_shape=tuple(model.input_size),
                                            augment=views.loader_augment())).train
        train.set_epoch(0)
        # Training drops the last, smaller batch; here it is all of a training set under one batch (500).
        train.drop_last = False
        pool = predictions.collect_outputs(model, train, mean, std, limit=pool_size, probabilities=False,
                                           precision=dtype)
    except AlexNetError as error:
        return inside_missing + [f"training images of {name!r}: {error}; no nearest neighbours"]
    found = predictions.find_neighbours(test, pool)
    draw("neighbours", "Nearest neighbours by FC7 features",
         ("Left: one test image per class" if len(found.query_index) == len(classes) else
          f"Left: one test image of each of {len(found.query_index)} of the {len(classes)} classes (the first "
          f"{len(found.query_index)} to appear among the test images)")
         + f"; right: the training images whose FC7 (pre-logits, "
         f"{pool.features.shape[1]}-d) features are nearest in Euclidean distance, among {len(pool):,} "
         f"training images (the paper's Figure 4, right). Green: same class as the test image.",
         lambda: figures.nearest_neighbours(test.thumbnails[found.query_index], test.labels[found.query_index],
                                            pool.thumbnails[found.index], pool.labels[found.index], found.distance,
                                            classes, pool_size=len(pool)))
    return inside_missing


def _inside_figures(draw, model, metadata: WeightsMetadata, test_images, test, classes, device,
                    test_limit: int) -> None:
    """Grad-CAM (alexnet.explain) on the most confident mistakes and on one correct image per class,
    and the test patches that drive a few conv5 filters most."""
    import numpy as np
    import torch

    from ..explain import attribute, conv_outputs, top_patches
    from ..explain.attribution import display_images
    from ..explain.pictures import attribution_grid, top_patches_figure
    from ..inference import open_trained

    predicted = test.probabilities.argmax(1)
    confidence = test.probabilities.max(1)
    wrong = np.flatnonzero(predicted != test.labels)
    mistakes = wrong[np.argsort(-confidence[wrong], kind="stable")][:EXPLAINED_MISTAKES].tolist()
    correct = []
    for label in range(min(len(classes), EXPLAINED_CLASSES)):
        found = np.flatnonzero((test.labels == label) & (predicted == label))
        if len(found):
            correct.append(int(found[0]))
    wanted = sorted(set(mistakes + correct))
    images: dict[int, torch.Tensor] = {}
    seen = 0
    for batch, _ in test_images if wanted else ():  # the loader's order is the outputs' order
        images.update({index: batch[index - seen] for index in wanted if seen <= index < seen + len(batch)})
        seen += len(batch)
        if seen > wanted[-1]:
            break

    def grid(indices: list[int], title) -> object:
        prepared = torch.stack([images[index] for index in indices])
        targets = [int(predicted[index]) for index in indices]
        maps = attribute(model, prepared, targets, "gradcam").cpu().numpy()
        return attribution_grid(display_images(prepared, metadata), maps, [title(index) for index in indices],
                                "gradcam")

    layer = conv_outputs(model)[-1].name  # the last convolution: conv5
    if mistakes:
        draw("gradcam_mistakes", "Grad-CAM of the most confident mistakes",
             f"What the network looked at ({layer}'s Grad-CAM for the class it predicted) in the "
             f"{len(mistakes)} wrong predictions it was surest of: the image above, the map laid over it below.",
             lambda: grid(mistakes, lambda i: f"{classes[test.labels[i]]}\nas {classes[predicted[i]]} "
                                                f"{confidence[i]:.2f}"))
    if correct:
        draw("gradcam_classes", "Grad-CAM of one correct image per class",
             f"The first correctly predicted test image of {'each' if len(correct) == len(classes) else 'a'} class "
             f"and {layer}'s Grad-CAM for it.",
             lambda: grid(correct, lambda i: f"{classes[predicted[i]]} {confidence[i]:.2f}"))
    limit = min(PATCH_IMAGES, test_limit)

    def patches():
        trained = open_trained((model, metadata), device=device, precision="fp32")
        result = top_patches(trained, test_images, layer, top=9, limit=limit)
        strongest = result.values[:, 0].argsort()[::-1][:PATCH_FILTERS].tolist()
        return top_patches_figure(result, filters=strongest, class_names=classes)

    draw("top_patches", f"What {layer}'s filters respond to",
         f"For the {PATCH_FILTERS} {layer} filters with the strongest responses, the 9 of the first {limit:,} "
         f"test images that excite each most, cut to the receptive field of the unit that responded (Zeiler and "
         f"Fergus' Figure 2); the title gives the activation and the commonest class among the nine.",
         patches)


# --- the page ---------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; margin-top: 1.6em; }
.subtitle { color: #59636e; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.7em; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f6f8fa; }
.columns { display: flex; gap: 2em; flex-wrap: wrap; align-items: flex-start; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #59636e; font-size: 0.9em; max-width: 70em; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; border-radius: 6px; }
.missing { background: #fff8c5; border: 1px solid #d4a72c; padding: 0.5em 1em; border-radius: 6px; }
"""


def _e(value) -> str:
    return html.escape(str(value))


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _number(value, kind: str, key: str = "") -> str:
    """A table cell showing ``value`` (``percent``, ``float``, ``int``), its exact value in data-value."""
    if value is None:
        return '<td class="number">–</td>'
    text = {"percent": lambda v: f"{100 * v:.2f}%", "float": lambda v: f"{v:.4f}",
            "int": lambda v: f"{int(v):,}", "seconds": lambda v: f"{v:.1f} s"}[kind](value)
    key_attribute = f' data-key="{_e(key)}"' if key else ""
    return f'<td class="number"{key_attribute} data-value="{_e(repr(value))}">{_e(text)}</td>'


def final_metrics(run: RunFiles) -> list[tuple[str, str, object, str]]:
    """(key, label, value, kind) rows of the final-metrics table."""
    rows = []
    evaluation = run.evaluation or {}
    for key, label, kind in (("count", "test images", "int"), ("top1", "top-1 accuracy", "percent"),
                             ("balanced_accuracy", "balanced accuracy (mean per-class recall)", "percent"),
                             ("top1_error", "top-1 error", "percent"), ("top5", "top-5 accuracy", "percent"),
                             ("top5_error", "top-5 error", "percent"), ("loss", "test loss", "float"),
                             ("macro_f1", "macro F1", "float"), ("weighted_f1", "weighted F1", "float")):
        if key in evaluation:
            rows.append((key, label, evaluation[key], kind))
    if run.history:
        best = max(run.history, key=lambda row: row["val_top1"])
        last = run.history[-1]
        rows += [
            ("best_val_top1", f"best validation top-1 (epoch {best['epoch']})", best["val_top1"], "percent"),
            ("val_top1", "last validation top-1", last["val_top1"], "percent"),
            ("val_loss", "last validation loss", last["val_loss"], "float"),
            ("train_loss", "last training loss", last["train_loss"], "float"),
            ("epochs", "epochs", last["epoch"], "int"),
            ("training_seconds", "training time", sum(row.get("epoch_seconds", 0.0) for row in run.history), "seconds"),
        ]
    return rows


def _metrics_table(run: RunFiles) -> str:
    evaluation = run.evaluation or {}
    views = {"ten": "ten crops", "mirror": "image and mirror averaged"}.get(evaluation_views(evaluation), "centre crop")
    body = "".join(f"<tr><th>{_e(label)}</th>{_number(value, kind, key)}</tr>"
                   for key, label, value, kind in final_metrics(run))
    tested = ("Validation images of {}, {} (there is no test split apart from them, so these figures are of "
              "images the run's early stopping and schedule saw).") if evaluation.get("split") == "val" else "Test set of {}, {}."
    note = f"<p>{tested.format(_e(evaluation.get('dataset', '?')), _e(views))}</p>" if evaluation else ""
    return f'<table id="final-metrics">{body}</table>{note}'


def evaluation_views(evaluation: dict) -> str:
    """The test views (``inference.VIEWS``) an evaluation.json was measured over: its ``views``, or
    in files written before it was stored, the legacy ``ten_crop``/``flip`` pair."""
    if "views" in evaluation:
        return str(evaluation["views"])
    return "ten" if evaluation.get("ten_crop") else "mirror" if evaluation.get("flip") else "centre"


def _per_class_table(evaluation: dict) -> str:
    rows = []
    for index, name in enumerate(evaluation["class_names"]):
        support = sum(evaluation["confusion_matrix"][index])
        rows.append(f"<tr><th>{_e(name)}</th>{_number(evaluation['precision'][index], 'float')}"
                    f"{_number(evaluation['recall'][index], 'float')}{_number(evaluation['f1'][index], 'float')}"
                    f"{_number(support, 'int')}</tr>")
    return ('<table id="per-class"><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>'
            f"<th>test images</th></tr>{''.join(rows)}</table>")


def _config_table(config: dict) -> str:
    rows = []
    for key, value in config.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "{}"
        rows.append(f"<tr><th>{_e(key)}</th><td>{_e(value)}</td></tr>")
    return f'<table id="config">{"".join(rows)}</table>'


def _usage(run: RunFiles) -> str:
    directory = run.directory.resolve()
    weights = run.weights.resolve()
    shape = "x".join(map(str, run.metadata.input_size)) if run.metadata else "?"
    from ..inference import TestViews, trained_views_refusal

    # The ten views only where training cropped and mirrored (evaluate refuses them otherwise), and
    # not where the run tested on them already.
    tested_on_ten = run.metadata is not None and TestViews.from_metadata(run.metadata).views == "ten"
    augment = run.config.get("augment") if isinstance(run.config.get("augment"), str) else None
    try:
        refused = run.metadata is None or bool(trained_views_refusal(run.metadata, augment))
    except AlexNetError:  # a spec this version does not read: no advice rather than a wrong one
        refused = True
    ten_views = ("" if tested_on_ten or refused
                 else f"\nalexnet evaluate {_e(directory)} --ten-crop      # the paper's ten views")
    return f"""
<p>Weights: <code>{_e(weights)}</code> (safetensors, with the model name, options, class names, input size
{_e(shape)} and normalisation in its metadata). Checkpoints to resume from:
<code>{_e(run.folder.last.resolve())}</code>.</p>
<p>Evaluate them again (same dataset, validation split and test-time views as the run):</p>
<pre>alexnet evaluate {_e(directory)}{ten_views}</pre>
<p>Predict with them, on your own images (any size, prepared as the run tested):</p>
<pre>alexnet predict {_e(directory)} photo.jpg my-folder/ --top-k 5</pre>
<p>or from Python:</p>
<pre>from alexnet.predict import predict

for prediction in predict("{_e(weights)}", ["photo.jpg"], top_k=5):
    print(prediction.source, list(zip(prediction.classes, prediction.probabilities)))</pre>
<p>Export them: <code>alexnet export {_e(directory)} --format onnx</code> (or <code>torchscript</code>,
<code>pt2</code>). Fine-tune from them: <code>alexnet train --init-from {_e(directory)} --dataset ...</code></p>
<p>Rebuild this page: <code>alexnet report {_e(directory)}</code></p>"""


def page_html(title: str, subtitle: str, sections: Sequence[tuple[str, str]]) -> str:
    """A whole self-contained page: the title, a subtitle line, then (heading, HTML) sections."""
    body = "".join(f"<h2>{_e(heading)}</h2>\n{content}\n" for heading, content in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{STYLE}</style></head>\n<body><h1>{_e(title)}</h1><p class=\"subtitle\">{_e(subtitle)}</p>\n"
            f"{body}</body></html>\n")


def _relative(path: Path, page_dir: Path) -> str:
    return os.path.relpath(path.resolve(), page_dir.resolve())


def figure_html(figure: Figure, page_dir: Path) -> str:
    """A figure embedded as a data URI, captioned with its PNG's path relative to the page."""
    return (f'<figure id="figure-{_e(figure.key)}"><img alt="{_e(figure.title)}" src="{_data_uri(figure.path)}">'
            f"<figcaption><b>{_e(figure.title)}.</b> {_e(figure.caption)} "
            f"(<code>{_e(_relative(figure.path, page_dir))}</code>)</figcaption></figure>")


def build_report(run_dir: str | Path, *, data_dir: str | Path | None = None, device: str = "auto",
                 test_limit: int = TEST_LIMIT, pool_size: int = POOL_SIZE) -> Path:
    """Write ``report.html`` (and ``figures/*.png``) into the run folder ``run_dir``; returns its path.

    ``data_dir`` overrides where the dataset is looked for (default: the run's, then the usual
    places); ``test_limit`` and ``pool_size`` bound the test images predicted and the training
    images searched for neighbours.
    """
    run = read_run(run_dir)
    drawn, missing = build_figures(run, data_dir=data_dir, device=device, test_limit=test_limit,
                                   pool_size=pool_size)
    config = run.config
    subtitle = (f"{config.get('model')} on {config.get('dataset')}, recipe {config.get('recipe')}, "
                f"{len(run.history)} of {config.get('epochs')} epoch{'' if config.get('epochs') == 1 else 's'}; "
                f"report written "
                f"{time.strftime('%Y-%m-%d %H:%M')} from {run.directory.resolve()}")
    sections = []
    if run.missing or missing:
        items = "".join(f"<li>{_e(item)}</li>" for item in run.missing + missing)
        sections.append(("Not in this report", f'<div class="missing"><ul>{items}</ul></div>'))
    sections.append(("Final metrics", f'<div class="columns"><div>{_metrics_table(run)}</div>'
                     + (f"<div>{_per_class_table(run.evaluation)}</div>" if run.evaluation else "") + "</div>"))
    outside = [figure for figure in drawn if figure.key not in INSIDE_FIGURES]
    inside = [figure for figure in drawn if figure.key in INSIDE_FIGURES]
    sections.append(("Figures", "\n".join(figure_html(figure, run.directory) for figure in outside) or "<p>none</p>"))
    if inside:
        sections.append(("Inside the network", "\n".join(figure_html(figure, run.directory) for figure in inside)))
    sections.append(("Configuration", _config_table(config)))
    sections.append(("Weights and how to use them", _usage(run)))
    path = run.directory / REPORT_NAME
    write_text(path, page_html(f"Run {run.name}", subtitle, sections))  # whole or not at all; any class name
    return path


# --- several runs -----------------------------------------------------------------------------

COMPARED = (("top1", "test top-1", "percent"), ("balanced_accuracy", "balanced accuracy", "percent"),
            ("top5", "test top-5", "percent"), ("loss", "test loss", "float"),
            ("macro_f1", "macro F1", "float"), ("best_val_top1", "best val top-1", "percent"),
            ("epochs", "epochs", "int"), ("training_seconds", "training time", "seconds"))


def _run_labels(runs: Sequence[RunFiles]) -> list[str]:
    """Folder names, or parent/name where two folders share a name."""
    names = [run.name for run in runs]
    return [f"{run.directory.parent.name}/{run.name}" if names.count(run.name) > 1 else run.name for run in runs]


def _canonical(value) -> str:
    """One text per value whatever the order of its keys, for any value YAML loads (dates, sets too)."""
    try:
        return json.dumps(value, sort_keys=True, default=repr)
    except TypeError:  # keys of mixed types cannot be sorted
        return repr(value)


def _report_link(label: str, run, folder: Path) -> str:
    """A run's line in a comparison: a link to its report.html, or, where it has none (trained with
    --no-report), the command that writes one."""
    page = run.directory / REPORT_NAME
    if page.is_file():
        return (f'<li>{_e(label)}: <a href="{_e(_relative(page, folder))}"><code>{_e(page.resolve())}</code>'
                f"</a></li>")
    return (f"<li>{_e(label)}: <code>{_e(run.directory.resolve())}</code> has no report yet; write it with "
            f"<code>alexnet report {_e(shlex.quote(str(run.directory.resolve())))}</code></li>")


def build_comparison(run_dirs: Sequence[str | Path], out: str | Path = "comparison.html") -> Path:
    """One page for several runs: their curves on shared axes, final metrics and differing settings
    in one table each; the curves also go to ``<out stem>-curves.png``. Returns the page's path."""
    seen = {}
    for directory in run_dirs:
        if Path(directory).resolve() in seen:
            raise AlexNetError(f"{directory} is given twice ({seen[Path(directory).resolve()]} is the same folder); "
                               f"compare different runs")
        seen[Path(directory).resolve()] = directory
    runs = [read_run(directory) for directory in run_dirs]
    if not runs:
        raise AlexNetError("give at least one run folder to compare")
    labels = _run_labels(runs)
    out = Path(out)
    sections = []
    rows = []
    for label, run in zip(labels, runs):
        values = {key: value for key, _, value, _ in final_metrics(run)}
        cells = "".join(_number(values.get(key), kind, key) for key, _, kind in COMPARED)
        rows.append(f"<tr><th>{_e(label)}</th><td>{_e(run.config.get('model'))}</td>"
                    f"<td>{_e(run.config.get('dataset'))}</td>{cells}</tr>")
    header = "".join(f"<th>{_e(title)}</th>" for _, title, _ in COMPARED)
    sections.append(("Final metrics", f'<table id="comparison"><tr><th>run</th><th>model</th><th>dataset</th>'
                                      f"{header}</tr>{''.join(rows)}</table>"))
    histories = {label: run.history for label, run in zip(labels, runs) if run.history}
    if histories:
        path = figures.save_figure(figures.comparison_curves(histories), out.with_name(f"{out.stem}-curves.png"))
        sections.append(("Curves", figure_html(Figure(
            "curves", "Training curves", "Validation (solid) and training (dashed) loss and top-1 per epoch.", path),
            out.parent)))
    keys = sorted({key for run in runs for key in run.config}, key=str)  # YAML keys may be numbers too
    differing = [key for key in keys if len({_canonical(run.config.get(key)) for run in runs}) > 1]
    if differing:
        head = "".join(f"<th>{_e(label)}</th>" for label in labels)
        body = "".join(f"<tr><th>{_e(key)}</th>" + "".join(f"<td>{_e(run.config.get(key))}</td>" for run in runs)
                       + "</tr>" for key in differing)
        table = f'<table id="differences"><tr><th>setting</th>{head}</tr>{body}</table>'
        sections.append(("Settings that differ", table))
    links = "".join(_report_link(label, run, out.parent) for label, run in zip(labels, runs))
    sections.append(("Runs", f"<ul>{links}</ul>"))
    write_text(out, page_html(f"{len(runs)} runs compared", time.strftime("written %Y-%m-%d %H:%M"), sections))
    return out
