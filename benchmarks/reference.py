"""`imagecorruptions` (the reference ImageNet-C implementation), made importable and
runnable on current NumPy, SciPy and scikit-image.

`imagecorruptions` 1.1.2 (the last release) no longer runs as published: it imports
`pkg_resources` (gone from new setuptools) for its frost pictures, calls
`skimage.filters.gaussian(..., multichannel=True)` (removed in scikit-image 0.19:
glass blur and Gaussian blur fail) and `np.float_` (removed in NumPy 2: fog fails).
`load()` patches exactly these three and nothing else, so every corruption runs the
published code. It is a test and benchmark reference only: `pip install
imagecorruptions --no-deps` (its own dependencies are jaxrobust's, plus OpenCV).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
import warnings


def load():
    """Imports `imagecorruptions` with the compatibility patches; returns the module.

    Raises:
        ImportError: `imagecorruptions` (or OpenCV) is not installed; the message says
            how to install it.
    """
    if importlib.util.find_spec("imagecorruptions") is None:
        raise ImportError("imagecorruptions is not installed: pip install imagecorruptions "
                          "--no-deps opencv-python-headless")
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")

        def resource_filename(package, name):
            spec = importlib.util.find_spec(package)
            return os.path.join(os.path.dirname(spec.origin), name)

        shim.resource_filename = resource_filename
        sys.modules["pkg_resources"] = shim
    import numpy as np

    if not hasattr(np, "float_"):
        setattr(np, "float_", np.float64)  # noqa: B010 - ruff's NPY201 fix would rename it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import imagecorruptions
        from imagecorruptions import corruptions
    import skimage.filters

    if getattr(corruptions.gaussian, "__module__", "") != __name__:
        def gaussian(image, *args, multichannel=None, **kwargs):
            if multichannel and "channel_axis" not in kwargs:
                kwargs["channel_axis"] = -1
            return skimage.filters.gaussian(image, *args, **kwargs)

        corruptions.gaussian = gaussian
    return imagecorruptions


def corrupt(image_u8, name: str, severity: int):
    """`imagecorruptions.corrupt` on one uint8 image; float output before its uint8 cast.

    Returns the corruption function's own float result (0..255) so that tests can
    compare without the final truncation; gray images come back as RGB, as there.
    """
    import numpy as np
    from PIL import Image

    ic = load()
    image = np.asarray(image_u8)
    if image.ndim == 2 or image.shape[-1] == 1:
        image = np.stack([image.reshape(image.shape[:2])] * 3, axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = ic.corruption_dict[name](Image.fromarray(image), severity)
    return np.asarray(out, np.float64)
