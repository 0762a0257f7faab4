"""Data: image sources and the corruption-type task.

Sources return float32 `(N, H, W, C)` images in [0, 1] with labels and class
names: `phantom` (synthetic ultrasound), `digits` (scikit-learn's 8x8 digits, shipped
inside jaxrobust), `folder:PATH` and `tfds:NAME`.
"""

from jaxrobust.data.sources import (
    PHANTOM_CLASSES,
    Dataset,
    gallery_image,
    load,
    load_digits,
    load_folder,
    load_phantom,
    load_tfds,
    quantize,
    sample_image,
)
from jaxrobust.data.task import ORIGINAL, Task, corruption_task, level_range, split

__all__ = [
    "ORIGINAL",
    "PHANTOM_CLASSES",
    "Dataset",
    "Task",
    "corruption_task",
    "gallery_image",
    "level_range",
    "load",
    "load_digits",
    "load_folder",
    "load_phantom",
    "load_tfds",
    "quantize",
    "sample_image",
    "split",
]
