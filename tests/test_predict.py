"""Prediction with trained and imported weights: torchvision's AlexNet in our format predicts on real
photographs exactly as torchvision does; every image kind is read; the commands' output and errors."""

import argparse
import csv
import hashlib
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.models import AlexNet_Weights
from torchvision.transforms.v2 import functional as TF

from alexnet import pretrained
from alexnet.cli import main
from alexnet.cli.predict import add_predict_command, add_weights_command
from alexnet.data.augment import normalize
from alexnet.data.test_time import ten_crop
from alexnet.data.images import decode
from alexnet.errors import AlexNetError
from alexnet.inference import TestViews
from alexnet.models import build_model
from alexnet.predict import Prediction, predict
from alexnet.pretrained import import_torchvision
from alexnet.weights import WeightsMetadata, read_metadata
from image_files import read_rgb  # tests/ is on the path (pytest's prepend import mode)

DATA = Path(__file__).parent / "data"
PHOTOS = [DATA / name for name in ("astronaut.jpg", "chelsea.png", "coffee.webp", "rocket.jpg")]
TORCHVISION_WEIGHTS = AlexNet_Weights.IMAGENET1K_V1


@pytest.fixture(scope="module")
def torchvision_state():
    """torchvision's AlexNet state dict (names, shapes, order) with seeded random values, scaled as
    He et al.'s initialisation so that the network is confident (top-1 probabilities of 0.2-0.4):
    with PyTorch's default initialisation every class gets about 0.001 and any preprocessing passes."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for name, tensor in torchvision.models.alexnet(weights=None).state_dict().items():
        scale = math.sqrt(2 / tensor[0].numel()) if name.endswith("weight") else 0.01
        state[name] = torch.randn(tensor.shape, generator=generator) * scale
    return state


@pytest.fixture(scope="module")
def torchvision_file(torchvision_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("torchvision") / "alexnet-owt-7be5be79.pth"
    torch.save(torchvision_state, path)
    return path


@pytest.fixture(scope="module")
def imported(torchvision_file, tmp_path_factory):
    return import_torchvision(torchvision_file, out=tmp_path_factory.mktemp("imported") / "imagenet.safetensors")


def torchvision_probabilities(state: dict, paths: list[Path]) -> torch.Tensor:
    """torchvision's own pipeline: its model with ``state`` and the weights' ``transforms()``."""
    model = torchvision.models.alexnet(weights=None)
    model.load_state_dict(state)
    preset = TORCHVISION_WEIGHTS.transforms()
    images = torch.stack([preset(read_rgb(path)) for path in paths])
    with torch.no_grad():
        return model.eval()(images).softmax(-1)


# --- ImageNet weights from torchvision ------------------------------------------------------


@pytest.mark.slow
def test_imported_weights_predict_as_torchvision_does_on_real_photos(imported, torchvision_state):
    expected = torchvision_probabilities(torchvision_state, PHOTOS)
    predictions = predict(imported, [str(path) for path in PHOTOS], top_k=1000, batch_size=3, precision="fp32")

    assert [prediction.source for prediction in predictions] == [str(path) for path in PHOTOS]
    categories = TORCHVISION_WEIGHTS.meta["categories"]
    for prediction, probabilities in zip(predictions, expected):
        ours = torch.zeros(1000)
        ours[list(prediction.indices)] = torch.tensor(prediction.probabilities)
        assert (ours - probabilities).abs().max() < 1e-5
        top5 = probabilities.topk(5).indices.tolist()
        assert list(prediction.indices[:5]) == top5
        assert list(prediction.classes[:5]) == [categories[i] for i in top5]
    # a confident network, so that the comparison could fail: the preprocessing's rounding matters
    assert expected.max(-1).values.min() > 0.15


def test_imported_metadata_is_torchvision_weights_own(imported, torchvision_file):
    metadata = read_metadata(imported)
    assert metadata.model == "alexnet_owt" and metadata.dataset == "imagenet"
    assert metadata.class_names == tuple(TORCHVISION_WEIGHTS.meta["categories"]) and metadata.num_classes == 1000
    assert metadata.input_size == (3, 224, 224)
    assert metadata.mean == (0.485, 0.456, 0.406) and metadata.std == (0.229, 0.224, 0.225)
    assert TestViews.from_metadata(metadata) == TestViews(224 / 256, "centre")
    assert metadata.precision == "fp32"
    # these are random values under torchvision's names: torchvision's accuracy is not theirs to carry
    assert metadata.test_top1 is None and metadata.test_top5 is None
    assert metadata.source == str(torchvision_file.resolve())


def test_the_published_file_alone_carries_the_published_accuracy(torchvision_file, tmp_path, monkeypatch, capsys):
    assert pretrained.published_hash() == "7be5be79"  # from the URL's file name, as torch.hub checks it
    assert not pretrained.is_published_file(torchvision_file)
    # the same file taken for the published one (its SHA-256 is what the name says): the accuracy comes along
    digest = hashlib.sha256(torchvision_file.read_bytes()).hexdigest()
    monkeypatch.setattr(pretrained, "published_hash", lambda weights=None: digest[:8])
    metadata = read_metadata(import_torchvision(torchvision_file, out=tmp_path / "published.safetensors"))
    assert metadata.test_top1 == pytest.approx(0.56522) and metadata.test_top5 == pytest.approx(0.79066)
    assert metadata.source == TORCHVISION_WEIGHTS.url
    monkeypatch.undo()
    assert main(["weights", "import", "torchvision", "--file", str(torchvision_file), "--out",
                 str(tmp_path / "other.safetensors")]) == 0
    assert "not the file torchvision publishes (its SHA-256 does not start with 7be5be79)" in capsys.readouterr().out


def test_import_finds_torch_hub_cache_and_says_how_to_get_the_file(torchvision_file, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(AlexNetError, match="--download"):
        import_torchvision(out=tmp_path / "a.safetensors")
    cached = pretrained.hub_cache_file()
    assert cached == tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    cached.parent.mkdir(parents=True)
    cached.symlink_to(torchvision_file)
    assert read_metadata(import_torchvision(out=tmp_path / "a.safetensors")).num_classes == 1000


def test_import_download_goes_through_torchvision(torchvision_state, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    calls = []

    def get_state_dict(self, progress, check_hash):
        calls.append((progress, check_hash))
        return torchvision_state

    monkeypatch.setattr(type(TORCHVISION_WEIGHTS), "get_state_dict", get_state_dict)
    import_torchvision(download=True, out=tmp_path / "a.safetensors")
    assert calls == [(True, True)]

    def offline(self, progress, check_hash):
        raise OSError("network is unreachable")

    monkeypatch.setattr(type(TORCHVISION_WEIGHTS), "get_state_dict", offline)
    with pytest.raises(AlexNetError, match="could not download .*network is unreachable.*--file"):
        import_torchvision(download=True, out=tmp_path / "b.safetensors")


@pytest.mark.slow
def test_import_refuses_other_architectures_naming_the_tensor(torchvision_state, tmp_path):
    resnet = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
    with pytest.raises(AlexNetError, match=r"no tensor 'features\.0\.weight' \(its first is 'conv1\.weight'\)"):
        import_torchvision(resnet, out=tmp_path / "out.safetensors")

    grey = dict(torchvision_state, **{"features.0.weight": torch.zeros(64, 1, 11, 11)})
    torch.save(grey, tmp_path / "grey.pth")
    with pytest.raises(AlexNetError, match=r"tensor 'features\.0\.weight' is 64x1x11x11, alexnet_owt needs 64x3x11x11"):
        import_torchvision(tmp_path / "grey.pth", out=tmp_path / "out.safetensors")

    extra = dict(torchvision_state, **{"classifier.7.weight": torch.zeros(2)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(AlexNetError, match=r"'classifier\.7\.weight' that alexnet_owt has not"):
        import_torchvision(tmp_path / "extra.pth", out=tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_import_refuses_missing_and_unreadable_files(tmp_path):
    with pytest.raises(AlexNetError, match="no file at"):
        import_torchvision(tmp_path / "absent.pth", out=tmp_path / "out.safetensors")
    with pytest.raises(AlexNetError, match="is a folder; pass the weights file"):
        import_torchvision(tmp_path, out=tmp_path / "out.safetensors")
    (tmp_path / "notes.pth").write_text("not a checkpoint")  # torch.load says only KeyError('110')
    with pytest.raises(AlexNetError, match=r"not a PyTorch weights file \(torch.save writes a zip archive or a pickle\)"):
        import_torchvision(tmp_path / "notes.pth", out=tmp_path / "out.safetensors")
    (tmp_path / "damaged.pth").write_bytes(b"PK\x03\x04" + bytes(100))  # a zip's start, then nothing
    with pytest.raises(AlexNetError, match="not a readable PyTorch weights file"):
        import_torchvision(tmp_path / "damaged.pth", out=tmp_path / "out.safetensors")
    torch.save({"epoch": 3}, tmp_path / "checkpoint.pth")
    with pytest.raises(AlexNetError, match="does not hold a state dict"):
        import_torchvision(tmp_path / "checkpoint.pth", out=tmp_path / "out.safetensors")


# --- images of every kind -------------------------------------------------------------------


def test_folder_walk_is_recursive_sorted_and_skips_unreadable_files(imported, tmp_path):
    (tmp_path / "b" / "deeper").mkdir(parents=True)
    shutil.copy(DATA / "chelsea.png", tmp_path / "b" / "deeper" / "cat.png")
    shutil.copy(DATA / "rocket.jpg", tmp_path / "a.jpg")
    (tmp_path / "b" / "notes.txt").write_text("a shopping list")
    (tmp_path / "b" / "cut.jpg").write_bytes((DATA / "rocket.jpg").read_bytes()[:3000])
    (tmp_path / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "b" / "damaged.png").write_bytes(b"\x89PNG\r\n\x1a\nxxxx")  # the signature, then nothing a decoder can use

    predictions = predict(imported, [tmp_path, tmp_path / "absent.png"], top_k=3)

    assert [p.source for p in predictions] == [str(tmp_path / "a.jpg"), str(tmp_path / "b/deeper/cat.png")]
    assert all(len(p.classes) == 3 for p in predictions)
    assert predictions[1].indices == predict(imported, [DATA / "chelsea.png"], top_k=3)[0].indices
    assert [(s.source, s.reason) for s in predictions.skipped] == [
        (str(tmp_path / "b/cut.jpg"), "image file is truncated (37 bytes not processed)"),
        # torchvision's decoder message, without the place in its C++ sources it starts with
        (str(tmp_path / "b/damaged.png"), "Out of bound read in decode_png. Probably, the input image is corrupted"),
        (str(tmp_path / "b/notes.txt"), "not an image file Pillow or torchvision can read"),
        (str(tmp_path / "absent.png"), "no such file or folder"),
    ]


@pytest.mark.slow
def test_every_image_kind_is_predicted(imported, tmp_path):
    with Image.open(DATA / "chelsea.png") as opened:
        photo = opened.convert("RGB")
    grey = photo.convert("L")
    files = {
        "grey.png": lambda path: grey.save(path),
        "grey16.png": lambda path: Image.fromarray(np.asarray(grey).astype(np.uint16) * 257).save(path),
        "rgba.png": lambda path: photo.convert("RGBA").save(path),
        "palette.gif": lambda path: photo.convert("P").save(path),
        "cmyk.jpg": lambda path: photo.convert("CMYK").save(path, quality=95),
        "photo.bmp": lambda path: photo.save(path),
        "rgba.webp": lambda path: photo.convert("RGBA").save(path, lossless=True),
        "cmyk.tiff": lambda path: photo.convert("CMYK").save(path),
    }
    for name, write in files.items():
        write(tmp_path / name)
    with Image.open(tmp_path / "grey16.png") as grey16:
        assert grey16.mode.startswith("I")

    predictions = predict(imported, [tmp_path / name for name in files], top_k=5)

    assert [Path(p.source).name for p in predictions] == list(files) and not predictions.skipped
    by_name = {Path(p.source).name: p for p in predictions}
    rgb = predict(imported, [DATA / "chelsea.png"])[0]
    # lossless copies of the photo predict as the photo; grey ones as its grey version, whatever the depth
    for name in ("rgba.png", "photo.bmp", "rgba.webp", "cmyk.tiff"):
        assert by_name[name].probabilities == pytest.approx(rgb.probabilities, abs=1e-6), name
    assert by_name["grey16.png"].probabilities == pytest.approx(by_name["grey.png"].probabilities, abs=1e-6)
    assert (decode(str(tmp_path / "cmyk.jpg")).float() - decode(str(DATA / "chelsea.png")).float()).abs().mean() < 3


@pytest.mark.slow
def test_tensors_predict_as_their_files(imported):
    image = decode(str(DATA / "chelsea.png"))
    from_file = predict(imported, [DATA / "chelsea.png"])[0]
    uint8, as_float, grey = predict(imported, [image, image.float() / 255, TF.rgb_to_grayscale(image)])
    assert (uint8.source, as_float.source, grey.source) == (0, 1, 2)
    assert uint8.probabilities == pytest.approx(from_file.probabilities, abs=1e-6)
    assert as_float.indices[:2] == from_file.indices[:2]  # the float image is not rounded after resizing
    with pytest.raises(AlexNetError, match="1 or 3 channels"):
        predict(imported, [torch.zeros(4, 20, 20, dtype=torch.uint8)])


def test_ten_views_are_cut_from_the_image_enlarged_by_256_over_224(torchvision_state):
    model = build_model("alexnet_owt")  # in training mode: predict evaluates, then gives it back as it was
    model.load_state_dict(torchvision_state)
    metadata = pretrained.imagenet_metadata()
    ten = WeightsMetadata(**{**vars(metadata), "test_views": TestViews(224 / 256, "ten").to_dict()})

    prediction = predict((model, ten), [DATA / "coffee.webp"], top_k=1000)[0]

    image = decode(str(DATA / "coffee.webp")).float()
    whole = TF.center_crop(TF.resize(image, [256], antialias=True).round() / 255, [256, 256])  # (3, 256, 256)
    views = ten_crop(normalize(whole, metadata.mean, metadata.std)[None], (224, 224))[0]  # (10, 3, 224, 224)
    assert model.training
    with torch.no_grad():
        expected = model.eval()(views).softmax(-1).mean(0)
    ours = torch.zeros(1000)
    ours[list(prediction.indices)] = torch.tensor(prediction.probabilities)
    assert (ours - expected).abs().max() < 1e-5


def test_grey_model_predicts_on_colour_photos():
    torch.manual_seed(0)
    model = build_model("alexnet_small28").eval()
    classes = tuple(f"class {i}" for i in range(10))
    metadata = WeightsMetadata("alexnet_small28", {}, classes, (1, 28, 28), (0.2860,), (0.3530,),
                               dataset="fashion-mnist", precision="fp32")

    prediction = predict((model, metadata), [DATA / "rocket.jpg"], top_k=3)[0]

    image = decode(str(DATA / "rocket.jpg")).float()
    grey = TF.rgb_to_grayscale(TF.center_crop(TF.resize(image, [28], antialias=True).round() / 255, [28, 28]))
    with torch.no_grad():
        expected = model(normalize(grey, (0.2860,), (0.3530,))[None]).softmax(-1)[0]
    assert list(prediction.indices) == expected.topk(3).indices.tolist()
    assert prediction.probabilities == pytest.approx(expected.topk(3).values.tolist(), abs=1e-6)
    assert prediction.classes[0] == classes[prediction.indices[0]]


def test_colour_model_trained_on_grey_data_sees_photos_in_grey():
    # alexnet_owt fine-tuned on Fashion-MNIST: 3 input channels, the grey data's one mean and std
    torch.manual_seed(0)
    model = build_model("alexnet_owt", num_classes=10).eval()
    metadata = WeightsMetadata("alexnet_owt", {}, tuple(map(str, range(10))), (3, 224, 224), (0.2860,), (0.3530,),
                               test_views=TestViews(1.0).to_dict(), precision="fp32")

    prediction = predict((model, metadata), [DATA / "chelsea.png"], top_k=10, precision="fp32")[0]

    image = decode(str(DATA / "chelsea.png")).float()
    grey = TF.rgb_to_grayscale(TF.center_crop(TF.resize(image, [224], antialias=True).round() / 255, [224, 224]))
    with torch.no_grad():
        expected = model(normalize(grey, (0.2860,), (0.3530,)).expand(3, -1, -1)[None]).softmax(-1)[0]
    assert list(prediction.indices) == expected.topk(10).indices.tolist()
    assert prediction.probabilities == pytest.approx(expected.topk(10).values.tolist(), abs=1e-6)


# --- the commands ---------------------------------------------------------------------------


def run_command(argv: list[str]) -> int:
    """What ``alexnet`` does with a command: parse, run, an AlexNetError printed as one line, exit 2."""
    parser = argparse.ArgumentParser(prog="alexnet")
    commands = parser.add_subparsers(dest="command", required=True)
    add_predict_command(commands)
    add_weights_command(commands)
    args = parser.parse_args([str(arg) for arg in argv])
    try:
        return args.run(args)
    except AlexNetError as error:
        print(f"alexnet: error: {error}", file=sys.stderr)
        return 2


@pytest.mark.slow
def test_predict_command_prints_text_json_and_csv(imported, tmp_path, capsys):
    photos = [DATA / "chelsea.png", DATA / "rocket.jpg"]
    expected = predict(imported, photos, top_k=3)

    assert run_command(["predict", imported, *photos, "--top-k", "3", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and lines[0] == str(photos[0]) and lines[4] == str(photos[1])
    name, probability = lines[1].rsplit(maxsplit=1)
    assert name.strip() == expected[0].classes[0] and float(probability) == pytest.approx(
        expected[0].probabilities[0], abs=1e-4)

    assert run_command(["predict", imported, *photos, "--top-k", "3", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [entry["source"] for entry in listed] == [str(path) for path in photos]
    assert [p["class"] for p in listed[1]["predictions"]] == list(expected[1].classes)

    table = tmp_path / "predictions.csv"
    assert run_command(["predict", imported, *photos, "--top-k", "3", "--csv", table]) == 0
    assert "wrote" in capsys.readouterr().out
    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert len(rows) == 6 and [row["path"] for row in rows] == [str(photos[0])] * 3 + [str(photos[1])] * 3
    assert [row["rank"] for row in rows[:3]] == ["1", "2", "3"] and rows[3]["class"] == expected[1].classes[0]


def test_predict_command_skips_unreadable_files_and_fails_when_nothing_was_read(imported, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    assert run_command(["predict", imported, notes, DATA / "chelsea.png"]) == 0
    captured = capsys.readouterr()
    assert captured.err == f"skipped {notes} (not an image file Pillow or torchvision can read)\n"
    assert captured.out.startswith(str(DATA / "chelsea.png"))

    assert run_command(["predict", imported, notes, tmp_path / "absent.jpg"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == [f"skipped {notes} (not an image file Pillow or torchvision can read)",
                       f"skipped {tmp_path / 'absent.jpg'} (no such file or folder)"]
    assert err[2].startswith("alexnet: error: no image could be read (2 inputs skipped") and len(err) == 3


def test_predict_command_errors_are_one_line(imported, tmp_path, capsys):
    assert run_command(["predict", tmp_path / "absent.safetensors", DATA / "chelsea.png"]) == 2
    assert capsys.readouterr().err == f"alexnet: error: no weights file at {tmp_path / 'absent.safetensors'}\n"
    assert run_command(["predict", tmp_path, DATA / "chelsea.png"]) == 2
    assert "holds no model.safetensors" in capsys.readouterr().err
    assert run_command(["predict", imported, DATA / "chelsea.png", "--csv", tmp_path]) == 2
    assert "is a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_weights_import_command(torchvision_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "imagenet.safetensors"
    digest = hashlib.sha256(torchvision_file.read_bytes()).hexdigest()  # taken for the published file
    monkeypatch.setattr(pretrained, "published_hash", lambda weights=None: digest[:8])
    assert run_command(["weights", "import", "torchvision", "--file", torchvision_file, "--out", out]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: alexnet_owt, 1000 ImageNet classes, input 3x224x224; "
                                              f"published top-1 56.52%, top-5 79.07%")
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), tmp_path / "squeezenet.pth")
    assert run_command(["weights", "import", "torchvision", "--file", tmp_path / "squeezenet.pth",
                        "--out", tmp_path / "other.safetensors"]) == 2
    err = capsys.readouterr().err
    assert err == (f"alexnet: error: {tmp_path / 'squeezenet.pth'} is not torchvision's AlexNet: tensor "
                   f"'features.0.weight' is 64x3x3x3, alexnet_owt needs 64x3x11x11\n")
    # a name the readers of weights would not take as weights (an .onnx that is safetensors) is refused
    assert run_command(["weights", "import", "torchvision", "--file", torchvision_file, "--out",
                        tmp_path / "model.onnx"]) == 2
    assert "end the name in .safetensors" in capsys.readouterr().err and not (tmp_path / "model.onnx").exists()


def test_prediction_is_a_plain_record():
    prediction = Prediction("cat.png", ("tabby", "tiger cat"), (0.6, 0.3), (281, 282))
    assert prediction.to_dict() == {"source": "cat.png", "predictions": [
        {"class": "tabby", "index": 281, "probability": 0.6}, {"class": "tiger cat", "index": 282, "probability": 0.3}]}


def test_the_streaming_test_loader_prepares_images_exactly_as_predict_does(tmp_path):
    from alexnet.data import LoaderOptions, build_eval_loader
    from alexnet.data.images import decode
    from alexnet.inference import TestViews

    for split in ("train", "val"):
        for label, name in enumerate(("cat", "rocket")):
            (tmp_path / split / name).mkdir(parents=True)
            shutil.copy(DATA / ("chelsea.png" if label == 0 else "rocket.jpg"), tmp_path / split / name / "a.img")
    views, mean, std = TestViews(224 / 256), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    loader, classes, _ = build_eval_loader("folder", "val", LoaderOptions(data_dir=tmp_path, batch_size=2,
                                                                          output_shape=(3, 64, 64),
                                                                          augment=views.loader_augment(),
                                                                          normalization=(mean, std), num_workers=0))
    images, labels = next(iter(loader))
    for image, label in zip(images, labels.tolist()):
        expected = views.preprocess(decode(str(tmp_path / "val" / classes[label] / "a.img")), (3, 64, 64), mean, std)
        assert torch.equal(image.contiguous(), expected.contiguous())
