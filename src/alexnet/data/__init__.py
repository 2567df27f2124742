"""Datasets by name, the in-memory and streaming loading paths, and batch augmentation.

    >>> from alexnet.data import build_loaders
    >>> loaders = build_loaders("fashion-mnist", batch_size=512, augment="light", device="cuda")
    >>> for images, labels in loaders.train: ...
    >>> test, classes, info = build_eval_loader("fashion-mnist", "test", batch_size=1000)
"""

from .augment import (
    PRESETS, AugmentConfig, ColourPCA, augment_batch, center_crop, color_jitter, compute_pca, epoch_generator,
    gaussian_noise, list_presets, normalize, pca_lighting, random_affine, random_crop, resolve_augment,
    ten_crop,
)
from .datasets import (
    DatasetInfo, ImageTensors, dataset_info, list_datasets, load_tensors, locate, search_dirs,
    split_validation, stratified_indices, stratified_subset, user_cache_dir,
)
from .base import BatchLoader, shard_indices
from .loaders import Loaders, build_eval_loader, build_loaders, num_classes
from .memory import InMemoryLoader
from .streaming import StreamingDataset, StreamingLoader, index_folder, readable_class_names

__all__ = [
    "PRESETS", "AugmentConfig", "BatchLoader", "ColourPCA", "DatasetInfo", "ImageTensors", "InMemoryLoader",
    "Loaders", "StreamingDataset", "StreamingLoader", "augment_batch", "build_eval_loader", "build_loaders", "num_classes",
    "center_crop", "color_jitter", "compute_pca", "dataset_info", "epoch_generator", "gaussian_noise",
    "index_folder", "list_datasets", "list_presets", "load_tensors", "locate", "normalize", "pca_lighting",
    "random_affine", "random_crop", "readable_class_names", "resolve_augment", "search_dirs", "shard_indices",
    "split_validation", "stratified_indices", "stratified_subset", "ten_crop",
    "user_cache_dir",
]
