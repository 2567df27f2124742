"""Fine-tuning: start a model from trained weights, replace its classifier where the classes differ,
and freeze what should not move.

``--init-from`` takes a weights file or a run folder. Every tensor must fit the new model except the
last classifier layer's, which is left at its fresh initialisation (timm's ``reset_classifier``)
when the class names differ: ten digits are not ten kinds of clothing even though both are ten
classes. Where the names are the same the trained classifier is kept; ``head="keep"`` or ``"new"``
overrides either choice. Any other mismatch is refused naming the first tensor that differs.
``--freeze features`` keeps every convolutional layer as it was, ``--freeze conv1-N`` the first N
convolutions and what follows each (its normalisation, activation, pooling): their parameters leave
the optimiser, and their batch norm statistics stay as trained (the layers run in eval mode).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import AlexNetError
from ..inference import weights_path
from ..weights import WeightsMetadata, check_finite, read_metadata

FREEZE_HELP = "none | features | conv1-N (the first N convolutions and their norms)"


@dataclass
class Pretrained:
    """What starting from trained weights did to a model."""

    source: Path
    metadata: WeightsMetadata
    loaded: list[str] = field(default_factory=list)  # parameter and buffer names taken from the source
    replaced: list[str] = field(default_factory=list)  # left at their new initialisation (the classifier)
    head_reason: str = ""  # why the classifier was kept or replaced

    def describe(self) -> str:
        head = (f"; {', '.join(self.replaced)} replaced" if self.replaced else "; classifier kept")
        return f"started from {self.source}: {len(self.loaded)} tensors loaded{head} ({self.head_reason})"


def head_choice(trained_classes: tuple[str, ...] | list[str], classes: list[str] | None,
                head: str = "auto") -> tuple[bool, str]:
    """Whether to start a new classifier, and why: ``auto`` replaces it when the class names (in
    order) differ from the trained ones; ``new`` always; ``keep`` never, which needs the same count."""
    trained, count = list(trained_classes), len(trained_classes)
    if head == "new":
        return True, "--new-head"
    if classes is None:  # no class names to compare (a model built by hand): the count decides
        return False, f"{count} classes there; no class names here to compare"
    if head == "keep":
        if len(classes) != count:
            raise AlexNetError(f"--keep-head: the weights' classifier has {count} classes, the data "
                               f"{len(classes)}; a classifier is kept only for as many classes (drop --keep-head)")
        return False, "--keep-head" + ("" if classes == trained else ": the classes are matched by position, "
                                       f"{trained[0]!r} as {classes[0]!r} and so on")
    if classes == trained:
        return False, f"the same {count} classes; --new-head to start a new classifier"
    if len(classes) == count:
        return True, (f"the classes differ ({_names(trained)} there, {_names(classes)} here); "
                      f"--keep-head to keep it")
    return True, f"{count} classes there, {len(classes)} here"


def _names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def load_pretrained(model: nn.Module, source: str | Path, classes: list[str] | None = None,
                    head: str = "auto") -> Pretrained:
    """Copy the weights in ``source`` into ``model``; the classifier's last layer is left new where
    :func:`head_choice` says (the class names differ, or ``head="new"``). Refuses, naming the tensor,
    any other tensor that does not fit."""
    path = weights_path(source)  # refuses a missing path or an unfinished run, saying what to pass
    metadata = read_metadata(path)
    new_head, reason = head_choice(metadata.class_names, classes, head)
    try:
        trained = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise AlexNetError(f"cannot read the weights in {path} ({error})") from None
    check_finite(trained, path)
    state = model.state_dict()
    head_tensors = {f"{name}.{key}" for name, module in model.named_modules() if module is model.get_classifier()
                    for key in module.state_dict()}
    result = Pretrained(path, metadata, head_reason=reason)
    for name, tensor in state.items():
        if name not in trained:
            raise AlexNetError(f"{path} was trained as another architecture: it has no {name} "
                               f"({tuple(tensor.shape)}); fine-tune from weights of the same model and switches")
        if name in head_tensors and (new_head or trained[name].shape != tensor.shape):
            result.replaced.append(name)
            continue
        if trained[name].shape != tensor.shape:
            raise AlexNetError(
                f"{path} was trained as another architecture: {name} is {tuple(trained[name].shape)} there, "
                f"{tuple(tensor.shape)} here (trained as {metadata.model}"
                + (f" with {metadata.model_options}" if metadata.model_options else "")
                + "); fine-tune from weights of the same model and switches")
        state[name] = trained[name]
        result.loaded.append(name)
    unused = sorted(set(trained) - set(state))
    if unused:
        raise AlexNetError(f"{path} was trained as another architecture: {unused[0]} has no place in this model")
    model.load_state_dict(state)
    return result


def frozen_modules(model: nn.Module, spec: str) -> list[nn.Module]:
    """The feature layers ``spec`` freezes, in order: none, all of ``features``, or up to the N-th conv."""
    if spec == "none":
        return []
    layers = list(model.features)
    if spec == "features":
        return layers
    match = re.fullmatch(r"conv1-(\d+)", spec)
    convolutions = [index for index, layer in enumerate(layers) if isinstance(layer, nn.Conv2d)]
    if not match or not 1 <= int(match[1]) <= len(convolutions):
        raise AlexNetError(f"freeze must be {FREEZE_HELP.replace('N', f'N (1..{len(convolutions)})')}, got {spec!r}")
    count = int(match[1])
    end = convolutions[count] if count < len(convolutions) else len(layers)  # up to the next convolution
    return layers[:end]


def freeze(model: nn.Module, spec: str) -> list[str]:
    """Stop the gradients of the layers ``spec`` names; returns their parameter names."""
    frozen = frozen_modules(model, spec)
    ids = {id(parameter) for module in frozen for parameter in module.parameters()}
    names = [name for name, parameter in model.named_parameters() if id(parameter) in ids]
    for module in frozen:
        module.requires_grad_(False)
    return names


def keep_frozen_norms_still(model: nn.Module, spec: str) -> None:
    """Put the batch norms of the frozen layers in eval mode: in train mode their running statistics
    would move with the new data although their weights do not. Call after ``model.train()``."""
    for module in frozen_modules(model, spec):
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def classifier_parameter_ids(model: nn.Module) -> set[int]:
    """The new head's parameters: they learn at the full rate, the pretrained rest at ``backbone_lr_scale``."""
    return {id(parameter) for parameter in model.get_classifier().parameters()}


def describe_frozen(names: list[str]) -> str:
    layers = sorted({name.rsplit(".", 1)[0] for name in names}, key=lambda name: [int(p) if p.isdigit() else p
                                                                                  for p in name.split(".")])
    return f"frozen: {', '.join(layers)} ({len(names)} tensors)" if names else "nothing frozen"

