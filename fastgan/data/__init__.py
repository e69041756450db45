"""fastgan data layer: MNIST / Fashion-MNIST (IDX), the packaged demo digits, image folders.

    from fastgan.data import load_dataset, DataError
    ds = load_dataset("mnist", data_dir=None, split="train", image_size=64, channels=3)
    ds.images  # uint8 [N, C, H, W] on the CPU; the trainer scales to float on the device

Every problem the user can fix raises DataError, whose str() is one line: problem and fix.
"""
from .base import DataError, ImageSet, convert_channels, finish, resize_images
from .downloader import MIRRORS, download
from .folder import IMAGE_EXTENSIONS, list_images, load_image_folder
from .idx import (IMAGES_MAGIC, LABELS_MAGIC, read_idx, read_idx_images, read_idx_labels,
                  read_idx_pair, write_idx)
from .sources import (DEBIAN_FASHION_MNIST, DEMO_INSTALL, ENV_VAR, NAMES, default_cache_dir,
                      download_target, find_idx_files, load_dataset, locate_package_file,
                      search_dirs)

__all__ = [
    "DataError", "ImageSet", "load_dataset", "download", "load_image_folder", "list_images",
    "read_idx", "read_idx_images", "read_idx_labels", "read_idx_pair", "write_idx",
    "resize_images", "convert_channels", "finish", "default_cache_dir", "download_target",
    "find_idx_files", "search_dirs", "locate_package_file", "IMAGES_MAGIC", "LABELS_MAGIC",
    "IMAGE_EXTENSIONS", "MIRRORS", "DEBIAN_FASHION_MNIST", "DEMO_INSTALL", "ENV_VAR", "NAMES",
]
