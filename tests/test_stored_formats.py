"""Files of an older format still read: a run folder written when weights carried the legacy
``augment``/``flip_test``/``ten_crop`` keys and evaluation.json the ``ten_crop``/``flip`` pair
(``tests/data/run-format-1``, see tests/data/README.md). Today's writers leave those keys out
(tests/test_report.py checks a fresh run's files); the readers translate them."""

import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from alexnet.evaluation import evaluate
from alexnet.inference import TestViews, open_trained
from alexnet.report.html import evaluation_views, read_run
from alexnet.weights import read_metadata

STORED = Path(__file__).parent / "data" / "run-format-1"
FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")


def stored_metadata() -> dict:
    with safe_open(str(STORED / "model.safetensors"), framework="pt") as file:
        return {key: json.loads(value) for key, value in file.metadata().items()}


def test_the_stored_run_is_of_the_old_format():
    metadata = stored_metadata()
    assert (metadata["augment"], metadata["flip_test"], metadata["ten_crop"]) == ("flip", True, False)
    evaluation = json.loads((STORED / "evaluation.json").read_text())
    assert (evaluation["ten_crop"], evaluation["flip"], evaluation["views"]) == (False, True, "mirror")


def test_old_weights_read_with_their_test_views(tmp_path):
    stored = read_metadata(STORED / "model.safetensors")
    assert TestViews.from_metadata(stored) == TestViews(1.0, "mirror")
    assert not {"augment", "flip_test", "ten_crop"} & set(stored.to_dict())  # read, not carried on
    # older still: no test_views at all, only the legacy keys they are translated from
    older = {key: json.dumps(value) for key, value in stored_metadata().items() if key != "test_views"}
    save_file(load_file(str(STORED / "model.safetensors")), str(tmp_path / "older.safetensors"), metadata=older)
    translated = read_metadata(tmp_path / "older.safetensors")
    assert translated.test_views == {"crop_fraction": 1.0, "views": "mirror"}
    assert open_trained(tmp_path / "older.safetensors", device="cpu").views == TestViews(1.0, "mirror")


@pytest.mark.slow
@needs_fashion
def test_old_weights_evaluate_to_the_number_their_run_recorded():
    recorded = json.loads((STORED / "evaluation.json").read_text())
    metrics = evaluate(STORED, precision="fp32", device="cpu")
    assert metrics.count == recorded["count"] == 10_000
    assert metrics.top1 == pytest.approx(recorded["top1"], abs=1e-4)
    assert metrics.top1 == pytest.approx(read_metadata(STORED / "model.safetensors").test_top1, abs=1e-4)


def test_old_evaluation_files_name_their_views(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(STORED, run)
    assert evaluation_views(read_run(run).evaluation) == "mirror"
    evaluation = json.loads((run / "evaluation.json").read_text())
    for legacy, views in (({"ten_crop": True, "flip": False}, "ten"), ({"ten_crop": False, "flip": True}, "mirror"),
                          ({"ten_crop": False, "flip": False}, "centre")):
        older = {key: value for key, value in evaluation.items() if key != "views"} | legacy
        (run / "evaluation.json").write_text(json.dumps(older))
        assert evaluation_views(read_run(run).evaluation) == views
