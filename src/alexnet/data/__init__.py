"""Datasets by name, the in-memory and streaming loading paths, and batch augmentation.

    >>> from alexnet.data import LoaderOptions, build_eval_loader, build_loaders, parse_augment
    >>> augment = parse_augment("light,rotate=10", "fashion-mnist")
    >>> loaders = build_loaders("fashion-mnist", LoaderOptions(batch_size=512, augment=augment, device="cuda"))
    >>> for images, labels in loaders.train: ...
    >>> test, classes, info = build_eval_loader("fashion-mnist", "test", LoaderOptions(batch_size=1000))
"""

from ..lazy import lazy_exports

# Each module and the public names it gives this package. They are imported on first use: the
# augmentation kernels and the loaders bring in torchvision and the image decoders, which reading a
# configuration or ``alexnet --help`` does not need.
_EXPORTS = {
    "augment": (
        "augment_batch", "center_crop", "color_jitter", "ColourPCA", "compute_pca", "epoch_generator",
        "gaussian_noise", "hue_jitter", "normalize", "pca_lighting", "random_affine", "random_crop",
    ),
    "augment_spec": (
        "AugmentConfig", "list_operations", "list_presets", "OPERATIONS", "parse_augment", "PRESET_SPECS",
        "PRESETS", "resolve_augment",
    ),
    "test_time": ("ten_crop",),
    "catalog": ("dataset_info", "DatasetInfo", "list_datasets"),
    "datasets": (
        "ImageTensors", "load_tensors", "locate",
        "search_dirs", "split_validation", "stratified_indices", "stratified_subset", "user_cache_dir",
    ),
    "base": ("BatchLoader", "shard_indices"),
    "loaders": ("build_eval_loader", "build_loaders", "files_digest", "LoaderOptions", "Loaders", "num_classes"),
    "memory": ("InMemoryLoader", "with_flipped_copies"),
    "streaming": ("index_folder", "readable_class_names", "StreamingDataset", "StreamingLoader"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
