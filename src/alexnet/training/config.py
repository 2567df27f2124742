"""The one typed configuration behind ``alexnet train``: flags and YAML files both set it."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from ..data.augment_spec import PRESETS, AugmentConfig, parse_augment
from ..errors import AlexNetError, quote
from ..perf import PRECISIONS, check_device
from .recipes import FINE_TUNING_RECIPE, RECIPES, get_recipe

if TYPE_CHECKING:
    import torch

    from ..data.loaders import LoaderOptions

# Fields whose None means "the recipe's value".
RECIPE_FIELDS = (
    "epochs", "batch_size", "lr", "weight_decay", "label_smoothing", "augment", "ten_crop", "flip_test",
    "optimizer", "momentum", "nesterov", "decay_norm_and_bias", "schedule", "warmup_fraction",
    "plateau_factor", "plateau_patience", "plateau_threshold", "step_epochs", "step_factor", "backbone_lr_scale",
)
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("plateau", "onecycle", "cosine", "step", "constant")
ALLREDUCE_DTYPES = ("fp32", "bf16")
HEADS = ("auto", "keep", "new")
CLASS_WEIGHTS = ("none", "balanced")
SAMPLERS = ("shuffle", "balanced")
# What may differ when a run is continued with --resume: where and how fast it runs, what it
# prints, and how long it goes on (extending a finished run is the common case), and the learning
# rate, to continue a run that diverged from its last good checkpoint at a lower one (the change is
# recorded in its history). Everything else made the checkpoint what it is, and a checkpoint can
# only continue the run it was.
RESUMABLE_FIELDS = (
    "epochs", "data_dir", "download", "device", "compile", "eval_batch_size", "checkpoint_every",
    "tensorboard", "quiet", "strict", "early_stopping", "threads", "lr", "divergence_check",
)
SEED_LIMIT = 2**63  # torch, numpy and our derived generators all take a seed below this



@dataclass
class TrainConfig:
    """Everything a training run depends on. ``None`` means "the recipe's value"."""

    # what to train
    model: str = "alexnet_small28"  # sized for 28x28 Fashion-MNIST; any registered model works
    model_options: dict = field(default_factory=dict)  # switches, e.g. {"norm": "lrn", "towers": 2}
    dataset: str = "fashion-mnist"  # the default data ships as a Debian package
    data_dir: str | None = None  # where datasets live; None searches the usual places
    download: bool = False  # fetch missing datasets (official URLs, checksummed)
    init_from: str | None = None  # fine-tune: start from these weights (a weights file or run folder)
    freeze: str = "none"  # none | features | conv1-N: layers of the starting weights kept as they are
    backbone_lr_scale: float | None = None  # fine-tune: the pretrained layers' rate, relative to the classifier's (finetune recipe: 0.1)
    head: str = "auto"  # fine-tune: auto keeps the trained classifier when the class names are the same, else a new one; keep | new
    subset: float = 1.0  # stratified fraction of the training set (the tutorial trains on 0.1)
    flipped_copies: bool = False  # add each training image mirrored and upside down, after subset: 3x (the PyTorch Fashion-MNIST tutorial)
    val_size: int | None = None  # images held out of the training set; None: the dataset's default
    test_size: int | None = None  # a flat folder: images held out for the test, apart from validation; None: 10%, 0: none
    class_weights: str = "none"  # none | balanced: each class's loss weighted by the inverse of its image count
    sampler: str = "shuffle"  # shuffle | balanced: draw training images so each class comes up equally often

    # how to train: a recipe, and overrides of its values
    recipe: str | None = None  # paper | fast | finetune | tutorial | d2l | ...; None: the model's own (alexnet_paper: paper), finetune with --init-from
    epochs: int | None = None  # passes over the training set
    batch_size: int | None = None  # global: split across processes when training in parallel
    lr: float | None = None  # peak learning rate for this batch size
    weight_decay: float | None = None  # L2 penalty (the paper: 5e-4)
    label_smoothing: float | None = None  # target probability moved to the other classes
    augment: str | None = None  # presets (paper, tutorial, light, flip, none) and/or operations, e.g. paper,noise=0.02
    optimizer: str | None = None  # sgd | adam | adamw
    momentum: float | None = None  # SGD's (the paper: 0.9)
    nesterov: bool | None = None  # Nesterov's momentum (SGD)
    decay_norm_and_bias: bool | None = None  # weight decay on biases and norm scales too (the paper decays all)
    schedule: str | None = None  # plateau | onecycle | cosine | step | constant
    warmup_fraction: float | None = None  # share of the steps spent warming up (onecycle)
    plateau_factor: float | None = None  # plateau: the rate is multiplied by this (the paper: 0.1)
    plateau_patience: int | None = None  # plateau: epochs without improvement before it falls
    plateau_threshold: float | None = None  # plateau: least fall in validation error that counts
    step_epochs: int | None = None  # step: epochs between falls of the rate (torchvision's reference: 30)
    step_factor: float | None = None  # step: the rate is multiplied by this at each fall
    early_stopping: int = 0  # stop after this many epochs without a better validation top-1 (0: never)
    divergence_check: bool = True  # stop a run whose loss climbs far above its start or whose accuracy stays at chance
    seed: int = 0  # weights, data order and augmentation all follow from it

    # where and how fast
    device: str = "auto"  # auto: CUDA when present, else CPU
    precision: str = "auto"  # auto: CPU bf16 where measured faster, else fp32; CUDA bf16 where native, else fp16 (the run records which)
    channels_last: bool = True  # NHWC is what oneDNN and cuDNN convolutions prefer
    compile: bool = False  # torch.compile the model (pays off for long runs; see README)
    threads: int | None = None  # CPU threads; None: one per physical core (shared out under torchrun)
    eval_batch_size: int = 1000

    # the run folder and what is written to it
    out: str = "runs"  # parent folder of run folders
    name: str | None = None  # run folder name; None: <model>-<dataset>-<time>
    checkpoint_every: int = 1  # epochs between checkpoints
    tensorboard: bool = False
    quiet: bool = False  # no progress bars, one line per epoch
    ten_crop: bool | None = None  # final evaluation averages the paper's ten views (the paper recipe does)
    flip_test: bool | None = None  # final evaluation averages each test image and its mirror (fast does)
    strict: bool = False  # a corrupt image is an error instead of being skipped and counted

    # many processes (torchrun)
    allreduce_dtype: str = "fp32"  # gradient all-reduce precision: fp32 | bf16
    accumulation_steps: int = 1  # gradient accumulation (no_sync between micro-batches)

    def resolved(self) -> "TrainConfig":
        """A copy with every recipe default filled in and every value checked."""
        self.validate()
        from ..models import default_recipe

        recipe = get_recipe(self.recipe or (FINE_TUNING_RECIPE if self.init_from else default_recipe(self.model)))
        values = dataclasses.asdict(self)
        for name in RECIPE_FIELDS:
            if values[name] is None:
                values[name] = getattr(recipe, name)
        if not self.init_from:
            values["backbone_lr_scale"] = 1.0  # one rate: there is no pretrained part
        values["model_options"] = {**recipe.model_options, **self.model_options}
        if self.init_from:  # the model is rebuilt as its weights were trained, unless the user says otherwise
            from ..inference import read_trained_metadata

            try:
                trained = read_trained_metadata(self.init_from)
            except AlexNetError:
                # A resumed run's config.yaml holds these options already, and its checkpoint every
                # weight: the source may be gone. A new run is refused when the weights are loaded.
                trained = None
            if trained is not None:
                values["model_options"] = {**trained.model_options, **self.model_options}
        from ..data.augment_spec import ten_views_unlike_training

        augment = _parsed_augment(values["augment"], values["dataset"])
        if values["augment"] not in PRESETS:  # the canonical spec: `hflip` 10,000 times is stored as `hflip`
            values["augment"] = augment.spec()
        unlike_training = ten_views_unlike_training(augment)
        dropped_ten_views = bool(values["ten_crop"] and unlike_training)
        if dropped_ten_views:
            if self.ten_crop:
                raise AlexNetError(
                    f"ten-crop testing shows the network crops and mirrors as training did, but the "
                    f"augmentation {values['augment']!r} on {values['dataset']} {unlike_training}; use "
                    f"--no-ten-crop (and --flip-test to average each test image with its mirror, where "
                    f"training mirrored)"
                )
            values["ten_crop"] = False
        if self.flip_test is None and not augment.horizontal_flip:
            values["flip_test"] = False  # a recipe's mirrored test needs mirrored training
        elif self.flip_test is None and dropped_ten_views:
            values["flip_test"] = True  # of the ten views, the centre and its mirror still apply
        values["recipe"] = recipe.name
        for key in ("data_dir", "init_from"):  # absolute, so evaluate, report and resume find them from anywhere
            if values[key]:
                values[key] = str(Path(values[key]).expanduser().absolute())
        import torch

        from ..models import build_model

        with torch.device("meta"):  # checks the model's options without allocating its weights
            build_model(self.model, **values["model_options"])
        return TrainConfig(**values)

    @property
    def augment_config(self) -> AugmentConfig:
        """``augment`` parsed for ``dataset`` (``parse_augment``; None: no augmentation), what the
        loaders and the test views take. Each spec is parsed once (``validate`` and ``resolved`` parse
        through here too); nothing is stored on the config, whose fields are all it writes out."""
        return _parsed_augment(self.augment, self.dataset)

    def loader_options(
        self, *, device: torch.device | str, output_shape: tuple[int, int, int],
        normalization: tuple[tuple[float, ...], tuple[float, ...]], batch_size: int | None = None, rank: int = 0,
        world_size: int = 1,
    ) -> LoaderOptions:
        """The options of this (resolved) run's loaders: its images, batches and augmentation, with
        what is decided as the run starts: the device, the model's input shape, the normalisation,
        this process's ``batch_size`` (default: the whole ``batch_size``) and its share of the data."""
        from ..data.loaders import LoaderOptions  # the loaders import the image libraries: not for --help

        return LoaderOptions(
            data_dir=self.data_dir, download=self.download, val_size=self.val_size, test_size=self.test_size,
            subset=self.subset, flipped_copies=self.flipped_copies, sampler=self.sampler, seed=self.seed,
            batch_size=batch_size or self.batch_size, eval_batch_size=self.eval_batch_size, output_shape=output_shape,
            augment=self.augment_config, normalization=normalization, device=device, rank=rank,
            world_size=world_size, channels_last=self.channels_last, strict=self.strict,
        )

    def validate(self) -> None:
        if self.recipe is not None:
            get_recipe(self.recipe)
        from ..data import dataset_info
        from ..models import get_model_builder

        get_model_builder(self.model)  # an unknown name: the known ones, and the closest
        dataset_info(self.dataset)
        if self.augment is not None:
            _parsed_augment(self.augment, self.dataset)  # an unknown or bad operation names itself
        _choice("precision", self.precision, PRECISIONS)
        _choice("allreduce_dtype", self.allreduce_dtype, ALLREDUCE_DTYPES)
        check_device(self.device)
        for name in ("epochs", "batch_size", "eval_batch_size", "checkpoint_every", "accumulation_steps", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise AlexNetError(f"{name} must be a positive integer, got {value}")
        if not 0.0 < self.subset <= 1.0:
            raise AlexNetError(f"subset must be a fraction in (0, 1], got {self.subset}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise AlexNetError(f"lr must be a positive number, got {self.lr}")
        if self.weight_decay is not None and not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise AlexNetError(f"weight_decay must be 0 or a positive number, got {self.weight_decay}")
        if self.label_smoothing is not None and not 0.0 <= self.label_smoothing < 1.0:
            raise AlexNetError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.seed < SEED_LIMIT:
            raise AlexNetError(f"seed must be an integer in [0, 2**63), got {quote(self.seed)}")
        if self.name is not None and (not self.name or self.name in (".", "..") or "/" in self.name
                                      or "\\" in self.name or "\0" in self.name):
            raise AlexNetError(
                f"name must be a plain folder name (no '/' or '..'), got {quote(self.name)}; the run "
                f"folder is created inside --out, so choose where it goes with --out"
            )
        for key in ("name", "out", "data_dir", "init_from"):  # written to config.yaml and printed in advice
            _check_text(key, getattr(self, key))
        if self.optimizer is not None:
            _choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.schedule is not None:
            _choice("schedule", self.schedule, SCHEDULES)
        for name, low, high in (("momentum", 0.0, 1.0), ("warmup_fraction", 0.0, 1.0), ("plateau_factor", 0.0, 1.0),
                                ("plateau_threshold", 0.0, 1.0), ("step_factor", 0.0, 1.0)):
            value = getattr(self, name)
            if value is not None and not low <= value < high:
                raise AlexNetError(f"{name} must be in [{low:g}, {high:g}), got {value}")
        _choice("head", self.head, HEADS)
        _choice("class_weights", self.class_weights, CLASS_WEIGHTS)
        _choice("sampler", self.sampler, SAMPLERS)
        if self.backbone_lr_scale is not None and not (math.isfinite(self.backbone_lr_scale)
                                                       and self.backbone_lr_scale >= 0):
            raise AlexNetError(f"backbone_lr_scale must be 0 or a positive number, got {self.backbone_lr_scale}")
        if not re.fullmatch(r"none|features|conv1-[1-9]\d*", self.freeze):
            raise AlexNetError(f"freeze must be none, features or conv1-N (the first N convolutions), got {quote(self.freeze)}")
        if self.init_from is None and (self.freeze != "none" or self.backbone_lr_scale not in (None, 1.0)
                                       or self.head != "auto"):
            raise AlexNetError("--freeze, --backbone-lr-scale, --keep-head and --new-head apply to fine-tuning: "
                               "give --init-from WEIGHTS|RUN_DIR")
        if self.step_epochs is not None and self.step_epochs < 1:
            raise AlexNetError(f"step_epochs must be a positive integer, got {self.step_epochs}")
        if self.early_stopping < 0:
            raise AlexNetError(f"early_stopping must be 0 (off) or a number of epochs, got {self.early_stopping}")
        if self.plateau_patience is not None and self.plateau_patience < 0:
            raise AlexNetError(f"plateau_patience must be 0 or more, got {self.plateau_patience}")
        if self.val_size is not None and self.val_size < 0:
            raise AlexNetError(f"val_size must be 0 or more, got {self.val_size}")
        if self.test_size is not None and self.test_size < 0:
            raise AlexNetError(f"test_size must be 0 or more, got {self.test_size}")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Build from a mapping (a YAML file's contents); unknown keys and bad types are refused."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known), key=str)
        if unknown:
            def named(key) -> str:  # the key, and the known one it is closest to
                close = difflib.get_close_matches(key, known, n=1) if isinstance(key, str) else []
                return _key_text(key) + (f" (did you mean {close[0]!r}?)" if close else "")

            raise AlexNetError(
                f"unknown configuration key(s) {', '.join(named(key) for key in unknown[:10])}; "
                f"valid keys: {', '.join(known)}"
            )
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            if not _matches(value, hints[key]):
                raise AlexNetError(f"configuration key {key!r} should be {_type_name(hints[key])}, got {quote(value)}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        try:
            values = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_ConfigLoader) or {}
        except OSError as error:
            raise AlexNetError(f"cannot read configuration file {path}: {error.strerror}") from None
        except (UnicodeDecodeError, ValueError):
            raise AlexNetError(f"configuration file {path} is not a text file; pass a YAML file of "
                               f"TrainConfig keys") from None
        except yaml.YAMLError as error:
            raise AlexNetError(f"configuration file {path} is not valid YAML: {str(error)[:300]}") from None
        if not isinstance(values, dict):
            raise AlexNetError(f"configuration file {path} should hold a mapping of keys to values")
        return cls.from_dict(values)

    def recipe_changes(self) -> list[str]:
        """How the recipe changed the model's own switches ("norm lrn -> batch"), for a resolved
        config: a model trains as itself unless a recipe or the user says otherwise, and says so."""
        import torch

        from ..models import build_model

        recipe = get_recipe(self.recipe)
        with torch.device("meta"):
            own = build_model(self.model).options
        return [f"{key} {own[key]} -> {value}" for key, value in recipe.model_options.items()
                if key in own and self.model_options.get(key) == value and own[key] != value]

    def to_yaml(self) -> str:
        text = yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)
        changes = self.recipe_changes() if self.recipe in RECIPES else []
        if changes:
            text = f"# recipe {self.recipe} changes {self.model}: {', '.join(changes)}\n" + text
        return text


@functools.lru_cache(maxsize=64)
def _parsed_augment(spec: str | None, dataset: str) -> AugmentConfig:
    """A spec parsed for a dataset, kept: configs, their resolved copies and the loaders all ask for
    the same few specs, and the parsed config is immutable."""
    return PRESETS["none"] if spec is None else parse_augment(spec, dataset)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise AlexNetError(f"{name} must be one of {', '.join(choices)}, got {quote(value)}")


def _key_text(key: object) -> str:
    return key if isinstance(key, str) and key.isprintable() and len(key) <= 40 else quote(key)


def _type_name(hint: object) -> str:
    """``int | None`` -> "int or null", as a YAML user reads it."""
    options = typing.get_args(hint) or (hint,)
    names = ["null" if option is type(None) else getattr(option, "__name__", str(option)) for option in options]
    return " or ".join(names)


def _matches(value: object, hint: object) -> bool:
    """Whether a YAML value fits a field's annotation (int where float is expected is fine)."""
    if value is None:
        return type(None) in typing.get_args(hint)
    options = typing.get_args(hint) or (hint,)
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if origin is int and isinstance(value, bool):
            continue
        if isinstance(origin, type) and isinstance(value, origin):
            return True
    return False


def _check_text(key: str, value: str | None) -> None:
    """Refuse a path that is not text (bytes that are not UTF-8, as a shell's ``$'caf\\xe9'`` gives):
    it could not be stored in config.yaml, and the ``--resume`` advice would name a folder no one
    can type."""
    if value is None:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        shown = value.encode("utf-8", "replace").decode()
        raise AlexNetError(f"{key} {shown!r} is not UTF-8 text (a byte such as \\xe9 of another encoding); "
                           f"use a name of UTF-8 characters, e.g. 'cafe' or 'caf\u00e9'") from None


class _ConfigLoader(yaml.SafeLoader):
    """YAML read as a configuration is written: ``1e-3`` is a number (YAML 1.1, PyYAML's, reads a
    float only with a dot, so ``lr: 1e-3`` was the text '1e-3'), and a key given twice is refused
    rather than the last one kept without a word."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):  # refused by the mapping's own construction
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"{key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."))
