"""Augmentation specs: parsing and writing them back, every operation's effect on real batches, the
presets as specs, the flipped copies of the training set, and the preview of your own images."""

import colorsys
import re
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from alexnet import AlexNetError
from alexnet.data import (
    OPERATIONS, PRESET_SPECS, PRESETS, AugmentConfig, InMemoryLoader, StreamingLoader, augment_batch,
    LoaderOptions, build_loaders, compute_pca, load_tensors, parse_augment, resolve_augment,
)
from alexnet.data import preview
from alexnet.data.streaming import sample_transform
from image_files import jpeg_bytes, png_bytes  # tests/ is on the path (pytest's prepend import mode)

HAS_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()
needs_fashion_mnist = pytest.mark.skipif(not HAS_FASHION_MNIST, reason="dataset-fashion-mnist is not installed")
# Every operation at once, but resized-crop (which crop excludes: both choose the training crops).
LONG_SPEC = ("flip,vflip,rotate=25,scale=0.8-1.2,translate=0.1,jitter=0.2,hue=0.05,noise=0.02,crop=224/256,"
             "pca=0.1,shift=4,erase=0.5")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ALEXNET_DATA", raising=False)


@pytest.fixture(scope="module")
def garments() -> torch.Tensor:
    """32 real Fashion-MNIST training images, uint8 (32, 1, 28, 28)."""
    if not HAS_FASHION_MNIST:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    return load_tensors("fashion-mnist", "train").images[:32].clone()


@pytest.fixture(scope="module")
def coloured(garments) -> torch.Tensor:
    """The garments in 32 colours on a dim blue ground: RGB images with hue, saturation and value."""
    generator = torch.Generator().manual_seed(0)
    colours = torch.rand(32, 3, 1, 1, generator=generator)
    ground = torch.tensor([0.05, 0.1, 0.3]).view(1, 3, 1, 1)
    shade = garments.float() / 255
    return ((shade * colours + (1 - shade) * ground) * 255).round().to(torch.uint8)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the spec: parsing, writing back, presets ------------------------------------------------


# What every preset was before specs existed: the presets must keep doing exactly this.
OLD_PRESETS = {
    "none": AugmentConfig(),
    "light": AugmentConfig(crop_padding=4, horizontal_flip=True),
    "flip": AugmentConfig(horizontal_flip=True),
    "paper": AugmentConfig(crop_fraction=224 / 256, horizontal_flip=True, pca_lighting_std=0.1),
    "tutorial": AugmentConfig(random_resized_crop=(0.7, 1.0), horizontal_flip=True, rotation_degrees=10.0,
                              translate=0.1, color_jitter=0.2, gaussian_noise_std=0.02),
}


@pytest.mark.parametrize("name", list(OLD_PRESETS))
def test_presets_are_specs_equal_to_their_old_configs(name):
    old = OLD_PRESETS[name]
    assert PRESETS[name] == old and AugmentConfig.preset(name) == old
    assert parse_augment(name) == old and resolve_augment(name) == old
    assert parse_augment(PRESET_SPECS[name] or "none") == old  # defined by their specs
    assert parse_augment(old.spec()) == old and parse_augment(old.spec(), "mnist") == old
    # digits: a preset mirrors nothing, whatever else it does
    assert parse_augment(name, "mnist") == replace(old, horizontal_flip=False, vertical_flip=False)


def test_canonical_specs():
    assert [PRESETS[name].spec() for name in PRESETS] == [
        "none", "shift=4,hflip", "hflip", "crop=224/256,hflip,pca=0.1",
        "resized-crop=0.7-1,hflip,rotate=10,translate=0.1,jitter=0.2,noise=0.02",
    ]
    config = parse_augment(LONG_SPEC)
    assert config == AugmentConfig(
        crop_padding=4, crop_fraction=0.875, horizontal_flip=True,
        vertical_flip=True, rotation_degrees=25.0, translate=0.1, color_jitter=0.2, pca_lighting_std=0.1,
        gaussian_noise_std=0.02, zoom_range=(0.8, 1.2), hue_jitter=0.05, erase_probability=0.5,
    )
    assert config.spec() == ("shift=4,crop=224/256,hflip,vflip,rotate=25,translate=0.1,"
                             "scale=0.8-1.2,jitter=0.2,hue=0.05,pca=0.1,noise=0.02,erase=0.5")
    assert parse_augment(config.spec()) == config
    assert parse_augment(" paper , noise=0.02 ") == parse_augment("paper,noise=0.02")  # spaces are fine


def test_later_terms_override_and_presets_set_only_their_own_fields():
    paper = PRESETS["paper"]
    assert parse_augment("paper,noise=0.02") == replace(paper, gaussian_noise_std=0.02)
    assert parse_augment("noise=0.02,paper") == replace(paper, gaussian_noise_std=0.02)
    assert parse_augment("paper,pca=0") == replace(paper, pca_lighting_std=0.0)
    assert parse_augment("rotate=5,rotate=7").rotation_degrees == 7
    assert parse_augment("light,paper") == replace(paper, crop_padding=4)
    assert parse_augment("shift=2,none").crop_padding == 2
    # digits: the mirrors a preset brings are dropped, those asked for by name are kept
    assert not parse_augment("flip", "mnist").horizontal_flip
    assert parse_augment("hflip,vflip", "mnist") == AugmentConfig(horizontal_flip=True, vertical_flip=True)
    assert parse_augment("paper,hflip", "mnist") == paper
    assert parse_augment("paper,noise=0.02", "mnist") == replace(paper, horizontal_flip=False, gaussian_noise_std=0.02)
    assert parse_augment("crop=0.5").crop_fraction == 0.5 and parse_augment("crop=1/4").crop_fraction == 0.25


def _ranges(low: float, high: float):
    bound = st.floats(min_value=low, max_value=high, exclude_min=True)
    return st.tuples(bound, bound).map(lambda pair: tuple(sorted(pair)))


CONFIGS = st.builds(
    AugmentConfig,
    crop_padding=st.integers(0, 64),
    crop_fraction=st.floats(min_value=0.05, max_value=1, exclude_min=True) | st.just(224 / 256),
    random_resized_crop=st.none() | _ranges(0.01, 1),
    horizontal_flip=st.booleans(),
    vertical_flip=st.booleans(),
    rotation_degrees=st.floats(0, 180),
    translate=st.floats(0, 1),
    color_jitter=st.floats(0, 1),
    pca_lighting_std=st.floats(0, 1),
    gaussian_noise_std=st.floats(0, 1),
    zoom_range=st.none() | _ranges(0.05, 10),
    hue_jitter=st.floats(0, 0.5),
    erase_probability=st.floats(0, 1),
).filter(lambda config: not (config.random_resized_crop and config.crop_fraction != 1.0))  # refused together


@settings(max_examples=300, deadline=None)
@given(config=CONFIGS, dataset=st.sampled_from([None, "mnist", "cifar10"]))
def test_spec_round_trips_for_every_config(config, dataset):
    spec = config.spec()
    assert parse_augment(spec, dataset) == config
    assert resolve_augment(spec, dataset) == config  # what a stored TrainConfig.augment reads back as
    assert parse_augment(spec).spec() == spec


BAD_SPECS = [
    ("paper,rotat=5", "unknown operation 'rotat=5' in augmentation 'paper,rotat=5'"),
    ("fancy", "unknown operation 'fancy'; valid: operations shift=PIXELS"),
    ("rotate=200", "rotate takes DEGREES, a number in [0, 180], got '200'"),
    ("rotate=-5", "rotate takes DEGREES, a number in [0, 180], got '-5'"),
    ("rotate=ten", "got 'ten'"),
    ("rotate=nan", "got 'nan'"),
    ("rotate", "rotate needs a value, rotate=DEGREES"),
    ("hue=0.6", "hue takes FRACTION, a number in [0, 0.5], got '0.6'"),
    ("scale=1.2-0.8", "scale takes MIN-MAX with 0.05 < MIN <= MAX <= 10, got '1.2-0.8'"),
    ("scale=80-120", "got '80-120'"),
    ("scale=0.8", "got '0.8'"),
    ("resized-crop=0-1", "resized-crop takes MIN-MAX with 0.01 < MIN <= MAX <= 1"),
    ("crop=256/224", "crop takes A/B|FRACTION, a number or a ratio in (0.05, 1], got '256/224'"),
    ("crop=224/0", "got '224/0'"),
    ("shift=2.5", "shift takes PIXELS, an integer in [0, 256], got '2.5'"),
    ("hflip=0.5", "'hflip=0.5': hflip takes no value"),
    ("paper,hflip=0.5", "hflip takes no value"),
    ("paper=1", "paper is a preset and takes no value"),
    ("paper,,hflip", "empty operation in augmentation 'paper,,hflip' (two commas, or one at an end)"),
    ("hflip,", "empty operation"),
    ("", "empty augmentation spec ''"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_bad_specs_name_the_bad_part_and_list_every_operation(spec, message):
    with pytest.raises(AlexNetError) as raised:
        parse_augment(spec)
    text = str(raised.value)
    assert message in text
    for operation in OPERATIONS:  # what would have been valid, with its value's syntax
        assert operation.usage() in text
    assert "presets none, light, flip, paper, tutorial" in text


def test_a_training_config_refuses_a_bad_spec_and_keeps_a_good_one():
    from alexnet.inference import TestViews
    from alexnet.training import TrainConfig

    with pytest.raises(AlexNetError, match=re.escape("'rotat=5' in augmentation 'paper,rotat=5'")):
        TrainConfig(augment="paper,rotat=5").validate()
    config = TrainConfig(recipe="paper", augment="paper,noise=0.02").resolved()
    assert config.augment == "crop=224/256,hflip,pca=0.1,noise=0.02"  # the canonical spec (a preset alone: its name)
    assert TestViews.from_config(config) == TestViews(224 / 256, "ten")  # the paper's crops: its ten views
    config = TrainConfig(recipe="fast", augment="hflip,rotate=10").resolved()
    assert config.flip_test and TestViews.from_config(config) == TestViews(1.0, "mirror")
    # digits: explicit mirrors are the user's choice, and the mirrored test follows them
    assert TrainConfig(recipe="fast", augment="hflip", dataset="mnist").resolved().flip_test
    assert not TrainConfig(recipe="fast", augment="flip", dataset="mnist").resolved().flip_test


def test_weights_metadata_with_a_spec_gives_the_training_crop():
    from alexnet.inference import TestViews
    from alexnet.weights import WeightsMetadata

    written = WeightsMetadata(model="alexnet_small28", model_options={}, class_names=("a", "b"),
                              input_size=(1, 28, 28), mean=(0.5,), std=(0.5,), dataset="fashion-mnist").to_dict()
    # a file written before the views were stored: the run's spec and switches stand for them
    legacy = WeightsMetadata.from_dict({**written, "test_views": None, "augment": "crop=0.75,hflip,hue=0.1",
                                        "flip_test": True})
    assert legacy.test_views == {"crop_fraction": 0.75, "views": "mirror"}
    again = WeightsMetadata.from_dict(legacy.to_dict())  # written again: the views, no legacy keys
    assert "augment" not in legacy.to_dict() and again == legacy
    assert TestViews.from_metadata(again) == TestViews(0.75, "mirror")


# --- each operation on a real batch -------------------------------------------------------------


def _train(images, spec, seed=0, size=None, pca=None):
    size = size or tuple(images.shape[-2:])
    return augment_batch(images, parse_augment(spec), train=True, output_size=size, generator=_generator(seed),
                         pca=pca)


@pytest.mark.parametrize("spec", ["vflip", "hflip", "vflip,scale=1-1", "hflip,scale=1-1"])
def test_flips_flip_exactly_the_chosen_images(garments, spec):
    """On the integer path (flips alone) and the resampling one (an identity zoom): each image is
    itself or its mirror image, about half are turned, and the others are untouched."""
    original = garments.float() / 255
    out = _train(garments, spec)
    dim = -2 if spec.startswith("vflip") else -1
    turned = []
    for index in range(len(out)):
        same = torch.allclose(out[index], original[index], atol=1e-5)
        flipped = torch.allclose(out[index], original[index].flip(dim), atol=1e-5)
        assert same != flipped, f"image {index} is neither itself nor its mirror image (or symmetric)"
        turned.append(flipped)
    assert 6 <= sum(turned) <= 26
    assert not torch.allclose(out[torch.tensor(turned)], original[torch.tensor(turned)].flip(-1 if dim == -2 else -2),
                              atol=1e-5)  # and in the named direction only


def test_scale_below_one_zooms_out_leaving_zero_borders(garments):
    original = garments.float() / 255
    out = _train(garments, "scale=0.5-0.5")  # half size, about the centre: 14x14 in the middle of 28x28
    assert out.shape == original.shape
    for border in (out[..., :7, :], out[..., 21:, :], out[..., :, :7], out[..., :, 21:]):
        assert torch.equal(border, torch.zeros_like(border))
    centre = out[..., 7:21, 7:21]
    # the garment, shrunk: sampled where a half-size bilinear resize samples it
    expected = torch.nn.functional.interpolate(original, size=(14, 14), mode="bilinear", align_corners=False)
    assert torch.allclose(centre, expected, atol=1e-5)
    assert torch.allclose(centre.mean((1, 2, 3)), original.mean((1, 2, 3)), atol=0.03)
    # above one zooms in: the centre half fills the frame
    zoomed = _train(garments, "scale=2-2")
    middle = torch.nn.functional.interpolate(original[..., 7:21, 7:21], size=(28, 28), mode="bilinear",
                                             align_corners=False)
    assert (zoomed - middle).abs().mean() < 0.05
    assert (zoomed == 0).float().mean() < (original == 0).float().mean() / 2
    # a range: every image its own factor, so that images shrink by different amounts
    widths = [(image.sum(1).amax(0) > 0).sum().item() for image in _train(garments, "scale=0.5-1")]
    assert len(set(widths)) > 4


def test_shift_on_the_resampling_path_is_a_whole_pixel_shift_with_zero_fill(garments):
    """``shift`` together with a resampling operation: each image moved by whole pixels, as the
    integer path's zero padding and random crop move it."""
    out = _train(garments, "shift=2,scale=1-1")
    padded = torch.nn.functional.pad(garments.float() / 255, (2, 2, 2, 2))
    moved = set()
    for index in range(len(out)):
        offsets = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.allclose(out[index], padded[index, :, dy : dy + 28, dx : dx + 28], atol=1e-5)]
        assert offsets, f"image {index} is not a whole-pixel shift of its original"
        moved |= set(offsets)
    assert len(moved) > 5


def test_hue_turns_the_hue_and_keeps_saturation_and_value(coloured):
    original = coloured.float() / 255
    out = _train(coloured, "hue=0.2")
    assert torch.allclose(out.amax(1), original.amax(1), atol=1e-6)  # HSV value
    assert not torch.allclose(out, original, atol=1e-3)
    shifts = []
    for index in range(len(out)):
        # the hue shift, read off the image's most saturated pixel with the standard library
        y, x = divmod(int((original[index].amax(0) - original[index].amin(0)).argmax()), 28)
        before = colorsys.rgb_to_hsv(*original[index, :, y, x].tolist())
        after = colorsys.rgb_to_hsv(*out[index, :, y, x].tolist())
        assert after[1] == pytest.approx(before[1], abs=1e-5) and after[2] == pytest.approx(before[2], abs=1e-6)
        shift = (after[0] - before[0] + 0.5) % 1 - 0.5
        assert abs(shift) <= 0.2 + 1e-5
        shifts.append(shift)
        # the whole image is turned by that one shift, as torchvision turns an image
        assert torch.allclose(out[index], TF.adjust_hue(original[index], shift), atol=1e-4)
    assert len({round(shift, 4) for shift in shifts}) == len(shifts)  # each image its own shift
    assert min(shifts) < -0.05 and max(shifts) > 0.05


def test_hue_leaves_grey_images_alone(garments):
    grey = garments.float() / 255
    assert torch.equal(_train(garments, "hue=0.5"), grey)
    as_rgb = garments.expand(-1, 3, -1, -1).contiguous()  # grey stored as RGB has no hue either
    assert torch.allclose(_train(as_rgb, "hue=0.5"), grey.expand(-1, 3, -1, -1), atol=1e-6)


# Every operation at a strength where it shows, on grey and on colour images.
EACH_OPERATION = {"shift": "shift=3", "crop": "crop=0.75", "resized-crop": "resized-crop=0.3-0.6",
                  "hflip": "hflip", "vflip": "vflip", "rotate": "rotate=30", "translate": "translate=0.2",
                  "scale": "scale=0.6-0.9", "jitter": "jitter=0.5", "hue": "hue=0.3", "pca": "pca=0.5",
                  "noise": "noise=0.1", "erase": "erase=1"}


def test_erasing_fills_one_rectangle_of_noise_in_the_chosen_images():
    from alexnet.data.augment import random_erasing

    images = torch.full((2000, 1, 28, 28), -1.0)  # noise is in 0..1: every erased pixel shows
    erased = random_erasing(images, 0.5, torch.Generator().manual_seed(0)) >= 0
    chosen = erased.flatten(1).any(1)
    assert 0.45 < chosen.float().mean() < 0.55
    for mask in erased[chosen][:200, 0]:
        rows, cols = mask.any(1).nonzero().squeeze(1), mask.any(0).nonzero().squeeze(1)
        # one solid rectangle (clipped to the image), of about 2-33% of the image
        assert mask.sum() == len(rows) * len(cols) and rows.diff().eq(1).all() and cols.diff().eq(1).all()
        assert 1 <= mask.sum() <= 0.34 * 28 * 28


def test_every_operation_is_tried_here():
    assert set(EACH_OPERATION) == {operation.name for operation in OPERATIONS}


@pytest.mark.parametrize("name", list(EACH_OPERATION))
def test_each_operation_changes_a_real_batch_and_replays_exactly(coloured, name):
    spec = EACH_OPERATION[name]
    pca = compute_pca(coloured)
    original = coloured.float() / 255
    out = _train(coloured, spec, pca=pca)
    assert out.shape == original.shape and torch.isfinite(out).all()
    changed = ~torch.isclose(out, original, atol=1e-4).flatten(1).all(1)
    assert changed.sum() >= (8 if "flip" in name else 30), f"{spec} changed {int(changed.sum())} of 32 images"
    assert torch.equal(out, _train(coloured, spec, pca=pca))  # the same generator seed, the same batch
    assert not torch.equal(out, _train(coloured, spec, seed=1, pca=pca))
    # evaluation never augments: at most the centre crop
    test = augment_batch(coloured, parse_augment(spec), train=False, output_size=(28, 28))
    assert torch.equal(test, original) or name == "crop"


@pytest.mark.parametrize("spec", [LONG_SPEC, "hflip,vflip,scale=0.8-1.2,hue=0.1", "light,hue=0.1,scale=0.9-1.1"])
def test_in_memory_loader_replays_composite_specs_exactly(coloured, spec):
    from alexnet.data import ImageTensors

    data = ImageTensors(coloured, torch.arange(32) % 4, list("abcd"), (0.5,) * 3, (0.25,) * 3, compute_pca(coloured))
    first, second = (InMemoryLoader(data, 8, train=True, augment=parse_augment(spec), output_shape=(3, 24, 24), seed=3)
                     for _ in range(2))
    first.set_epoch(2)
    second.set_epoch(2)
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (8, 3, 24, 24)


def test_streaming_applies_the_new_operations_and_replays(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for index in range(3):
            image = torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8, generator=_generator(index))
            (tmp_path / label / f"{index}.png").write_bytes(png_bytes(image))
    transform = sample_transform(parse_augment("resized-crop=0.5-1,shift=2,scale=0.8-1.2"), train=True,
                                 output_size=(24, 24))
    kinds = [type(step) for step in transform.transforms]
    assert kinds == [v2.RandomResizedCrop, v2.RandomCrop, v2.RandomAffine]
    assert transform.transforms[1].padding == [2, 2, 2, 2] and transform.transforms[2].scale == (0.8, 1.2)
    samples = [(str(path), int(path.parent.name == "dog")) for path in sorted(tmp_path.rglob("*.png"))]

    def epoch():
        loader = StreamingLoader(samples, ["cat", "dog"], 3, train=True, mean=(0.5,) * 3, std=(0.25,) * 3,
                                 augment=parse_augment("hue=0.3,scale=0.7-0.9,vflip"), output_shape=(3, 24, 24),
                                 num_workers=0, seed=1)
        return list(loader)

    once, again = epoch(), epoch()
    assert len(once) == 2
    for (x1, _), (x2, _) in zip(once, again, strict=True):
        assert torch.equal(x1, x2)


# --- flipped copies of the training set ------------------------------------------------------------


def _write_mnist(root: Path, count: int) -> None:
    """MNIST's IDX files of ``count`` training and 20 test images, each image its own pattern."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, number in (("train", count), ("t10k", 20)):
        labels = torch.arange(number) % 10
        images = torch.randint(0, 256, (number, 28, 28), dtype=torch.uint8, generator=_generator(number))
        for array, kind in ((images, "images-idx3"), (labels, "labels-idx1")):
            header = struct.pack(">BBBB", 0, 0, 0x08, array.dim()) + struct.pack(f">{array.dim()}I", *array.shape)
            (raw / f"{prefix}-{kind}-ubyte").write_bytes(header + array.to(torch.uint8).numpy().tobytes())


@pytest.mark.parametrize("val_size", [40, 0])
def test_flipped_copies_triple_the_training_set_only(tmp_path, val_size):
    _write_mnist(tmp_path, 400)
    options = dict(data_dir=tmp_path, batch_size=16, subset=0.25, val_size=val_size, seed=2,
                   augment=parse_augment("none", "mnist"))
    plain = build_loaders("mnist", LoaderOptions(**options))
    copies = build_loaders("mnist", LoaderOptions(**options, flipped_copies=True))
    n = len(plain.train.labels)
    assert n == round(0.25 * (400 - val_size))
    assert copies.train.num_images == 3 * n and len(copies.train) == 3 * n // 16
    images = copies.train.images
    assert torch.equal(images[:n], plain.train.images)
    assert torch.equal(images[n : 2 * n], plain.train.images.flip(-1))  # mirrored
    assert torch.equal(images[2 * n :], plain.train.images.flip(-2))  # upside down
    assert torch.equal(copies.train.labels, plain.train.labels.repeat(3)) and images.dtype == torch.uint8
    for split in ("val", "test"):  # never copied
        assert torch.equal(getattr(copies, split).images, getattr(plain, split).images)
        assert torch.equal(getattr(copies, split).labels, getattr(plain, split).labels)
    batch, _ = next(iter(copies.train))
    assert batch.shape == (16, 1, 28, 28)


@needs_fashion_mnist
def test_flipped_copies_of_the_tutorials_ten_percent():
    loaders = build_loaders("fashion-mnist", LoaderOptions(batch_size=64, subset=0.1, flipped_copies=True,
                                                           augment=parse_augment("none")))
    assert loaders.train.num_images == 3 * 5_500 and len(loaders.val.labels) == 5_000
    assert len(loaders.test.labels) == 10_000
    assert torch.bincount(loaders.train.labels).tolist() == [1_650] * 10


def test_flipped_copies_are_refused_for_streamed_datasets(tmp_path):
    with pytest.raises(AlexNetError, match="streamed from files. Flip them as they are read instead: --augment hflip"):
        build_loaders("imagenet", LoaderOptions(data_dir=tmp_path, flipped_copies=True))


def test_flipped_copies_is_a_training_flag():
    from alexnet.cli import build_parser
    from alexnet.training import TrainConfig

    assert TrainConfig().flipped_copies is False
    assert TrainConfig.from_dict({"flipped_copies": True, "subset": 0.1}).flipped_copies is True
    parser = build_parser()
    assert parser.parse_args(["train", "--flipped-copies", "--subset", "0.1"]).flipped_copies is True
    assert parser.parse_args(["train", "--no-flipped-copies"]).flipped_copies is False


# --- the preview of your own images -----------------------------------------------------------------


def _photos(folder: Path) -> list[Path]:
    height, width = 90, 120
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    image = torch.stack([x, y, 1 - x * y]) * 255
    image[:, 20:45, 25:60] = torch.tensor([250.0, 30, 30]).view(3, 1, 1)
    png, jpeg = folder / "boxes.png", folder / "mirror.jpg"
    png.write_bytes(png_bytes(image.to(torch.uint8)))
    jpeg.write_bytes(jpeg_bytes(image.flip(-1).to(torch.uint8)))
    return [png, jpeg]


def test_preview_columns_show_each_operation_alone_then_combined():
    titles = [title for title, _ in preview.preview_columns("paper,noise=0.02", "fashion-mnist")]
    assert titles == ["original", "crop=224/256", "hflip", "pca=0.1", "noise=0.02", "combined"]
    columns = preview.preview_columns("paper,noise=0.02", "mnist")  # the preset mirrors no digits
    assert [title for title, _ in columns] == ["original", "crop=224/256", "pca=0.1", "noise=0.02", "combined"]
    assert columns[-1][1] == parse_augment("paper,noise=0.02", "mnist")
    assert [title for title, _ in preview.preview_columns("vflip", None)] == ["original", "vflip"]
    assert [title for title, _ in preview.preview_columns("none", None)] == ["original"]
    default = [title for title, _ in preview.preview_columns(None, None, extra="light")]
    assert default[0] == "original" and default[-1] == "this run: light" and "hue=0.25" in default
    shown = {name for spec in preview.PREVIEW_SPECS for name in [spec.partition("=")[0]]}
    assert {operation.name for operation in OPERATIONS} <= shown  # the default grid shows every operation


def test_augment_preview_of_your_own_images_writes_a_png(tmp_path, capsys):
    from alexnet.cli import main

    photos = _photos(tmp_path)
    out = tmp_path / "mine.png"
    argv = ["augment-preview", "--augment", "paper,hue=0.1", "--out", str(out)]
    assert main([*argv, "--image", str(photos[0]), "--image", str(photos[1])]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    with Image.open(out) as image:
        # original, crop, hflip, hue, pca, combined: 6 columns of 1.25 inches, 2 rows, at 120 dpi
        assert image.format == "PNG" and image.size == (900, 360)
        pixels = torch.tensor(np.array(image.convert("RGB")), dtype=torch.float32)  # (H, W, 3)
    assert (pixels[..., 0] - pixels[..., 1]).abs().mean() > 5  # colour images drawn in colour
    # --preset is the older name of --augment
    assert main(["augment-preview", "--preset", "vflip", "--image", str(photos[0]), "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.size == (300, 198)  # original and vflip, one row


def test_augment_preview_refuses_what_it_cannot_show(tmp_path, capsys, monkeypatch):
    from alexnet.cli import main

    def no_work(*args):
        raise AssertionError("read images before refusing the arguments")

    monkeypatch.setattr(preview, "_own_images", no_work)
    out = str(tmp_path / "x.png")
    assert main(["augment-preview", "--augment", "paper,rotat=5", "--image", "nowhere.png", "--out", out]) == 2
    assert "unknown operation 'rotat=5'" in capsys.readouterr().err
    assert main(["augment-preview", "--image", str(tmp_path / "nowhere.png"), "--out", out]) == 2
    assert "nowhere.png: no such file" in capsys.readouterr().err
    monkeypatch.undo()
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert main(["augment-preview", "--image", str(text), "--out", out]) == 2
    assert f"cannot read image {text}" in capsys.readouterr().err
    assert not Path(out).exists()


def test_readme_lists_every_operation():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = readme[readme.index("### Augmentation"):].replace("\\|", "|")  # a | in a table cell is escaped
    for operation in OPERATIONS:
        assert f"`{operation.usage()}`" in table, operation.name


def test_crop_and_resized_crop_together_are_refused():
    # training would take the resized crops and the test the centre crop of the other: say so instead
    with pytest.raises(AlexNetError, match=r"crop and resized-crop both choose the training crops"):
        parse_augment("crop=224/256,resized-crop=0.5-1")
    with pytest.raises(AlexNetError, match=r"give one"):
        parse_augment("tutorial,paper")
