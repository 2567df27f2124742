"""Datasets by name, the in-memory and streaming loading paths, and batch augmentation.

    >>> from alexnet.data import LoaderOptions, build_eval_loader, build_loaders, parse_augment
    >>> augment = parse_augment("light,rotate=10", "fashion-mnist")
    >>> loaders = build_loaders("fashion-mnist", LoaderOptions(batch_size=512, augment=augment, device="cuda"))
    >>> for images, labels in loaders.train: ...
    >>> test, classes, info = build_eval_loader("fashion-mnist", "test", LoaderOptions(batch_size=1000))
"""

from .augment import (
    ColourPCA, augment_batch, center_crop, color_jitter, compute_pca, epoch_generator, gaussian_noise, hue_jitter,
    normalize, pca_lighting, random_affine, random_crop,
)
from .augment_spec import (
    OPERATIONS, PRESET_SPECS, PRESETS, AugmentConfig, list_operations, list_presets, parse_augment, resolve_augment,
)
from .test_time import ten_crop
from .datasets import (
    DatasetInfo, ImageTensors, dataset_info, list_datasets, load_tensors, locate, search_dirs,
    split_validation, stratified_indices, stratified_subset, user_cache_dir,
)
from .base import BatchLoader, shard_indices
from .loaders import LoaderOptions, Loaders, build_eval_loader, build_loaders, files_digest, num_classes
from .memory import InMemoryLoader, with_flipped_copies
from .streaming import StreamingDataset, StreamingLoader, index_folder, readable_class_names

__all__ = [
    "OPERATIONS", "PRESET_SPECS", "PRESETS", "AugmentConfig", "BatchLoader", "ColourPCA", "DatasetInfo",
    "ImageTensors", "InMemoryLoader",
    "LoaderOptions", "Loaders", "StreamingDataset", "StreamingLoader", "augment_batch", "build_eval_loader", "build_loaders",
    "files_digest", "num_classes",
    "center_crop", "color_jitter", "compute_pca", "dataset_info", "epoch_generator", "gaussian_noise", "hue_jitter",
    "index_folder", "list_datasets", "list_operations", "list_presets", "load_tensors", "locate", "normalize",
    "parse_augment", "pca_lighting",
    "random_affine", "random_crop", "readable_class_names", "resolve_augment", "search_dirs", "shard_indices",
    "split_validation", "stratified_indices", "stratified_subset", "ten_crop",
    "user_cache_dir", "with_flipped_copies",
]
