"""The run report: every figure from a short real run, the page parses, its images decode, its
numbers are the run's own."""

import base64
import io
import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import alexnet.data
import alexnet.data.preview
from alexnet import AlexNetError, report
from alexnet.cli import main
from alexnet.data import LoaderOptions, build_loaders, parse_augment
from alexnet.inference import predict_logits
from alexnet.report import build_comparison, build_report, figures, predictions
from alexnet.weights import load_weights
from fashion_small import fashion_small_test

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")

# Bounds for the report drawn at the end of the test run: seconds instead of the default's tens.
SMALL_REPORT = dict(test_limit=1_000, pool_size=1_000)
FIGURES = ("training_curves", "confusion_matrix", "per_class_scores", "filters", "predictions", "mistakes",
           "neighbours", "augmentation", "gradcam_mistakes", "gradcam_classes", "top_patches")


class Page(HTMLParser):
    """Tables (by id: rows of (tag, attributes, text) cells), images, figure ids and the text."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.images, self.figure_ids, self.text = {}, [], [], []
        self._table = self._cell = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = [tag, attrs, ""]
            self._table[-1].append(self._cell)
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "figure":
            self.figure_ids.append(attrs.get("id"))

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell[2] += data


def decode_image(src: str) -> Image.Image:
    assert src.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
    image.load()
    return image


def keyed_values(table) -> dict[str, float]:
    return {attrs["data-key"]: float(attrs["data-value"]) for row in table for tag, attrs, _ in row
            if "data-key" in attrs}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A two-epoch run on 2% of Fashion-MNIST whose report is written by training itself, tested on
    the first 1,000 test images (tests/fashion_small.py)."""
    if not FASHION.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    real, calls = report.build_report, []

    def small_report(directory, **options):
        calls.append(Path(directory))
        return real(directory, **{**SMALL_REPORT, **options})

    out = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report, "build_report", small_report)
        assert main(["train", "--subset", "0.02", "--val-size", "500", "--epochs", "2", "--batch-size", "64",
                     "--quiet", "--eval-batch-size", "500", "--data-dir", fashion_small_test(), "--out", str(out),
                     "--name", "short"]) == 0
    assert calls == [out / "short"]  # the end of training wrote the report, once
    return out / "short"


@pytest.mark.slow
@needs_fashion
def test_training_writes_every_figure_as_png(run_dir):
    assert (run_dir / "report.html").is_file()
    for key in FIGURES:
        with Image.open(run_dir / "figures" / f"{key}.png") as image:
            assert image.format == "PNG" and min(image.size) > 100
    assert "report: " in (run_dir / "log.txt").read_text()


@pytest.mark.slow
@needs_fashion
def test_report_parses_its_images_decode_and_its_numbers_are_the_runs(run_dir):
    page = Page((run_dir / "report.html").read_text())
    assert page.figure_ids == [f"figure-{key}" for key in FIGURES]
    assert len(page.images) == len(FIGURES)
    for src in page.images:
        assert decode_image(src).size[0] > 100
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["views"] == "mirror" and not {"ten_crop", "flip"} & set(evaluation)  # no legacy keys
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    shown = keyed_values(page.tables["final-metrics"])
    for key in ("count", "top1", "balanced_accuracy", "top5", "top1_error", "top5_error", "loss", "macro_f1",
                "weighted_f1"):
        assert shown[key] == evaluation[key], key
    assert shown["best_val_top1"] == max(row["val_top1"] for row in history)
    assert shown["val_loss"] == history[-1]["val_loss"] and shown["epochs"] == 2
    top1_cell = next(cell for row in page.tables["final-metrics"] for cell in row if cell[1].get("data-key") == "top1")
    assert top1_cell[2] == f"{100 * evaluation['top1']:.2f}%"
    per_class = page.tables["per-class"][1:]
    assert [row[0][2] for row in per_class] == evaluation["class_names"]
    for index, row in enumerate(per_class):
        precision, recall, f1, support = (float(cell[1]["data-value"]) for cell in row[1:])
        assert (precision, recall, f1) == (evaluation["precision"][index], evaluation["recall"][index],
                                           evaluation["f1"][index])
        assert support == sum(evaluation["confusion_matrix"][index])
    config = {row[0][2]: row[1][2] for row in page.tables["config"]}
    assert config["model"] == "alexnet_small28" and config["epochs"] == "2"
    text = "".join(page.text)
    assert f"alexnet evaluate {run_dir.resolve()}" in text
    assert str((run_dir / "model.safetensors").resolve()) in text
    assert "Not in this report" not in text
    assert "image and mirror averaged" in text


@pytest.mark.slow
@needs_fashion
def test_report_probabilities_are_those_evaluate_uses(run_dir):
    model, metadata = load_weights(run_dir / "model.safetensors")
    assert metadata.test_views["views"] == "mirror"  # the fast recipe averages each image with its mirror
    from safetensors import safe_open

    with safe_open(str(run_dir / "model.safetensors"), framework="pt") as file:
        assert not {"augment", "flip_test", "ten_crop"} & set(file.metadata())  # no legacy keys written
    data = build_loaders("fashion-mnist", LoaderOptions(batch_size=250, eval_batch_size=250,
                                                        augment=parse_augment("none"), val_size=metadata.val_size,
                                                        seed=metadata.seed))
    outputs = predictions.collect_outputs(model, data.test, metadata.mean, metadata.std, limit=300, views="mirror")
    images = torch.cat([images for images, _ in data.test][:2])[:300]
    expected = predict_logits(model, images, "mirror").softmax(1).numpy()
    assert outputs.probabilities.shape == (300, 10) and outputs.features.shape == (300, model.num_features)
    np.testing.assert_allclose(outputs.probabilities, expected, atol=1e-5)
    assert outputs.labels.tolist() == data.test.labels[:300].tolist()
    # thumbnails undo the normalisation: the raw uint8 test images, back in 0..1
    raw = alexnet.data.load_tensors("fashion-mnist", "test").images[:300].permute(0, 2, 3, 1).numpy() / 255
    np.testing.assert_allclose(outputs.thumbnails, raw, atol=1e-5)


def test_nearest_neighbours_are_the_smallest_euclidean_distances():
    generator = np.random.default_rng(0)
    pool = generator.normal(size=(200, 16)).astype(np.float32)
    queries = generator.normal(size=(3, 16)).astype(np.float32)
    index, distance = predictions.nearest_neighbours(queries, pool, k=5)
    brute = np.linalg.norm(queries[:, None] - pool[None], axis=-1)
    np.testing.assert_array_equal(index, np.argsort(brute, axis=1)[:, :5])
    np.testing.assert_allclose(distance, np.sort(brute, axis=1)[:, :5], rtol=1e-5)
    labels = np.array([3, 1, 3, 0, 1, 2])
    assert predictions.query_indices(labels, 3).tolist() == [0, 1, 3]


def test_filters_one_block_per_tower_and_rgb_kernels():
    weights = np.random.default_rng(0).normal(size=(96, 3, 11, 11))
    figure = figures.first_layer_filters(weights, towers=2)
    blocks = [axis.images[0].get_array() for axis in figure.axes]
    assert len(blocks) == 2 and blocks[0].shape == (3 * 12 + 1, 16 * 12 + 1, 3)  # 48 kernels: 3 rows of 16
    kernel = blocks[1][1:12, 1:12]  # tower 2's first kernel is kernel 48, scaled to 0..1
    scaled = (weights[48] - weights[48].min()) / np.ptp(weights[48])
    np.testing.assert_allclose(kernel, scaled.transpose(1, 2, 0))
    figures.plt.close(figure)


@pytest.mark.slow
@needs_fashion
def test_report_without_the_dataset_keeps_the_other_figures(run_dir, tmp_path, monkeypatch):
    copy = shutil.copytree(run_dir, tmp_path / "copied", ignore=shutil.ignore_patterns("figures", "report.html"))

    def no_data(name, *args, **kwargs):
        raise AlexNetError(f"dataset {name!r} not found")

    monkeypatch.setattr(alexnet.data, "build_loaders", no_data)
    monkeypatch.setattr(alexnet.data, "build_eval_loader", no_data)
    monkeypatch.setattr(alexnet.data.preview, "load_tensors", no_data)
    page = Page(build_report(copy).read_text())
    assert page.figure_ids == ["figure-training_curves", "figure-confusion_matrix", "figure-per_class_scores",
                               "figure-filters"]
    text = "".join(page.text)
    assert "Not in this report" in text and "is not available here" in text
    evaluation = json.loads((copy / "evaluation.json").read_text())
    assert keyed_values(page.tables["final-metrics"])["top1"] == evaluation["top1"]


@pytest.mark.slow
@needs_fashion
def test_comparison_of_two_runs_holds_both(run_dir, tmp_path):
    second = shutil.copytree(run_dir, tmp_path / "short-longer-lr", ignore=shutil.ignore_patterns("figures"))
    rows = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()]
    rows[-1]["val_top1"] = 0.987654321
    (second / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (second / "config.yaml").write_text((second / "config.yaml").read_text().replace("lr: 0.1", "lr: 0.05"))
    (second / "report.html").unlink(missing_ok=True)  # trained with --no-report
    out = tmp_path / "compare" / "comparison.html"
    assert main(["report", str(run_dir), str(second), "--out", str(out)]) == 0
    page = Page(out.read_text())
    # a link to each report there is; for a run without one, the command that writes it
    assert f'href="{os.path.relpath(run_dir / "report.html", out.parent)}"' in out.read_text()
    assert f"has no report yet; write it with <code>alexnet report {second.resolve()}</code>" in out.read_text()
    table = page.tables["comparison"]
    assert [row[0][2] for row in table[1:]] == ["short", "short-longer-lr"]
    first_run, second_run = (keyed_values([row]) for row in table[1:])
    original = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert first_run["best_val_top1"] == max(row["val_top1"] for row in original)
    assert second_run["best_val_top1"] == 0.987654321
    assert first_run["top1"] == second_run["top1"] == json.loads((run_dir / "evaluation.json").read_text())["top1"]
    assert [row[0][2] for row in page.tables["differences"][1:]] == ["lr"]
    assert len(page.images) == 1 and decode_image(page.images[0]).size[0] > 100
    assert (out.parent / "comparison-curves.png").is_file()
    (tmp_path / "link").symlink_to(run_dir)  # the same run by another name
    with pytest.raises(AlexNetError, match="is given twice .* is the same folder.*compare different runs"):
        build_comparison([run_dir, tmp_path / "link"], tmp_path / "x.html")
    with pytest.raises(AlexNetError, match="nothing: no such folder; pass the run folder"):
        build_comparison([run_dir, tmp_path / "nothing"], tmp_path / "x.html")
