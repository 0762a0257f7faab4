"""The benchmark generators of `hendrycks/robustness` (`ImageNet-C/create_c/
make_cifar_c.py`, `make_tinyimagenet_c.py`, `make_imagenet_64_c.py`) and
`imagecorruptions` (ImageNet-C), transcribed from their formulas and tables as test
references: NumPy, OpenCV, Pillow, SciPy and scikit-image, one image at a time.

Their tables are written out here again, apart from `jaxrobust.corruptions.tables`,
so that a wrong entry there fails a test. ImageMagick's motion blur (Wand) is replaced
by `imagecorruptions`' NumPy port of it, as in jaxrobust; frost photographs are not
shipped (jaxrobust's frost layer is procedural), so frost is not transcribed.

Each function takes an 8-bit RGB image `(H, W, 3)` and a severity 1..5 and returns
float values in 0..255, as the generators do before `np.uint8`.
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image
from scipy.ndimage import map_coordinates
from scipy.ndimage import zoom as scizoom
from skimage import color
from skimage.filters import gaussian

TABLES = ("imagenet", "cifar10", "tinyimagenet", "imagenet64")
SIZE = {"imagenet": 224, "cifar10": 32, "tinyimagenet": 64, "imagenet64": 64}

_SMALL = {  # make_tinyimagenet_c.py == make_imagenet_64_c.py
    "gaussian_noise": [0.04, 0.08, .12, .15, .18],
    "shot_noise": [250, 100, 50, 30, 15],
    "impulse_noise": [.01, .02, .05, .08, .14],
    "speckle_noise": [.15, .2, 0.25, 0.3, 0.35],
    "gaussian_blur": [.5, .75, 1, 1.25, 1.5],
    "glass_blur": [(0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)],
    "defocus_blur": [(0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)],
    "motion_blur": [(10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)],
    "zoom_blur": [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
                  np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)],
    "fog": [(.4, 3), (.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)],
    "frost": [(1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)],
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.8), (0.1, 0.2, 1, 0.5, 10, 4, 0.8),
             (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65),
             (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)],
    "spatter": [(0.62, 0.1, 0.7, 0.7, 0.6, 0), (0.65, 0.1, 0.8, 0.7, 0.6, 0),
                (0.65, 0.3, 1, 0.69, 0.6, 0), (0.65, 0.1, 0.7, 0.68, 0.6, 1),
                (0.65, 0.1, 0.5, 0.67, 0.6, 1)],
    "contrast": [.4, .3, .2, .1, 0.05],
    "brightness": [.1, .2, .3, .4, .5],
    "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)],
    "jpeg_compression": [65, 58, 50, 40, 25],
    "pixelate": [0.9, 0.8, 0.7, 0.6, 0.5],
    "elastic_transform": [(0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06),
                          (0.1, 0.03, 0.03), (0.16, 0.03, 0.02)],  # x IMSIZE
}

C = {
    "imagenet": {  # imagecorruptions 1.1.2
        "gaussian_noise": [.08, .12, 0.18, 0.26, 0.38],
        "shot_noise": [60, 25, 12, 5, 3],
        "impulse_noise": [.03, .06, .09, 0.17, 0.27],
        "speckle_noise": [.15, .2, 0.35, 0.45, 0.6],
        "gaussian_blur": [1, 2, 3, 4, 6],
        "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
        "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
        "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
        "zoom_blur": [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
                      np.arange(1, 1.21, 0.02), np.arange(1, 1.26, 0.02),
                      np.arange(1, 1.31, 0.03)],
        "fog": [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)],
        "frost": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
        "snow": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                 (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                 (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
        "spatter": [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0),
                    (0.65, 0.3, 2, 0.68, 0.5, 0), (0.65, 0.3, 1, 0.65, 1.5, 1),
                    (0.67, 0.4, 1, 0.65, 1.5, 1)],
        "contrast": [0.4, .3, .2, .1, .05],
        "brightness": [.1, .2, .3, .4, .5],
        "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)],
        "jpeg_compression": [25, 18, 15, 10, 7],
        "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
        "elastic_transform": [250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12],
    },
    "cifar10": {  # make_cifar_c.py
        "gaussian_noise": [0.04, 0.06, .08, .09, .10],
        "shot_noise": [500, 250, 100, 75, 50],
        "impulse_noise": [.01, .02, .03, .05, .07],
        "speckle_noise": [.06, .1, .12, .16, .2],
        "gaussian_blur": [.4, .6, 0.7, .8, 1],
        "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
        "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
        "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
        "zoom_blur": _SMALL["zoom_blur"],
        "fog": [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
        "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
        "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                 (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                 (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
        "spatter": [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                    (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                    (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
        "contrast": [.75, .5, .4, .3, 0.15],
        "brightness": [.05, .1, .15, .2, .3],
        "saturate": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
        "jpeg_compression": [80, 65, 58, 50, 40],
        "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
        "elastic_transform": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                              (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)],  # x IMSIZE
    },
    "tinyimagenet": _SMALL,
    "imagenet64": _SMALL,
}


def _c(name, severity, table):
    return C[table][name][severity - 1]


# --------------------------------------------------------------- deterministic


def disk(radius, alias_blur=0.1, dtype=np.float32):
    if radius <= 8:
        grid = np.arange(-8, 8 + 1)
        ksize = (3, 3)
    else:
        grid = np.arange(-radius, radius + 1)
        ksize = (5, 5)
    xx, yy = np.meshgrid(grid, grid)
    aliased = np.array((xx ** 2 + yy ** 2) <= radius ** 2, dtype=dtype)
    aliased /= np.sum(aliased)
    return cv2.GaussianBlur(aliased, ksize=ksize, sigmaX=alias_blur)


def clipped_zoom(img, zoom_factor):
    h, w = img.shape[:2]
    ch, cw = int(np.ceil(h / float(zoom_factor))), int(np.ceil(w / float(zoom_factor)))
    top, left = (h - ch) // 2, (w - cw) // 2
    img = scizoom(img[top:top + ch, left:left + cw], (zoom_factor, zoom_factor, 1), order=1)
    trim_top, trim_left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return img[trim_top:trim_top + h, trim_left:trim_left + w]


def gaussian_blur(x, severity, table):
    x = gaussian(np.array(x) / 255., sigma=_c("gaussian_blur", severity, table),
                 channel_axis=-1)
    return np.clip(x, 0, 1) * 255


def defocus_blur(x, severity, table):
    radius, alias = _c("defocus_blur", severity, table)
    x = np.array(x) / 255.
    kernel = disk(radius=radius, alias_blur=alias)
    channels = [cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)]
    return np.clip(np.array(channels).transpose((1, 2, 0)), 0, 1) * 255


def zoom_blur(x, severity, table):
    x = (np.array(x) / 255.).astype(np.float32)
    out = np.zeros_like(x)
    zooms = _c("zoom_blur", severity, table)
    for zoom_factor in zooms:
        out += clipped_zoom(x, zoom_factor)
    return np.clip((x + out) / (len(zooms) + 1), 0, 1) * 255


def contrast(x, severity, table):
    x = np.array(x) / 255.
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * _c("contrast", severity, table) + means, 0, 1) * 255


def brightness(x, severity, table):
    x = color.rgb2hsv(np.array(x) / 255.)
    x[:, :, 2] = np.clip(x[:, :, 2] + _c("brightness", severity, table), 0, 1)
    return np.clip(color.hsv2rgb(x), 0, 1) * 255


def saturate(x, severity, table):
    factor, offset = _c("saturate", severity, table)
    x = color.rgb2hsv(np.array(x) / 255.)
    x[:, :, 1] = np.clip(x[:, :, 1] * factor + offset, 0, 1)
    return np.clip(color.hsv2rgb(x), 0, 1) * 255


def pixelate(x, severity, table):
    c = _c("pixelate", severity, table)
    h, w = x.shape[:2]
    img = Image.fromarray(x).resize((int(w * c), int(h * c)), Image.BOX)
    # imagecorruptions goes back up NEAREST; the small-image generators BOX
    img = img.resize((w, h), Image.NEAREST if table == "imagenet" else Image.BOX)
    return np.asarray(img, np.float64)


def jpeg_compression(x, severity, table):
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, "JPEG", quality=_c("jpeg_compression", severity, table))
    return np.asarray(Image.open(buf), np.float64)


DETERMINISTIC = {"gaussian_blur": gaussian_blur, "defocus_blur": defocus_blur,
                 "zoom_blur": zoom_blur, "contrast": contrast, "brightness": brightness,
                 "saturate": saturate, "pixelate": pixelate,
                 "jpeg_compression": jpeg_compression}


# --------------------------------------------------------------------- random


def gaussian_noise(x, severity, table, rng):
    x = np.array(x) / 255.
    return np.clip(x + rng.normal(size=x.shape, scale=_c("gaussian_noise", severity, table)),
                   0, 1) * 255


def shot_noise(x, severity, table, rng):
    c = _c("shot_noise", severity, table)
    return np.clip(rng.poisson(np.array(x) / 255. * c) / c, 0, 1) * 255


def impulse_noise(x, severity, table, rng):
    # skimage's random_noise(mode='s&p', amount=c): a fraction c of the values,
    # half salt and half pepper
    x = np.array(x) / 255.
    c = _c("impulse_noise", severity, table)
    hit = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    return np.where(hit, salt.astype(float), x) * 255


def speckle_noise(x, severity, table, rng):
    x = np.array(x) / 255.
    c = _c("speckle_noise", severity, table)
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1) * 255


def glass_blur(x, severity, table, rng):
    sigma, delta, passes = _c("glass_blur", severity, table)
    h_max, w_max = x.shape[:2]
    x = np.uint8(gaussian(np.array(x) / 255., sigma=sigma, channel_axis=-1) * 255)
    for _ in range(passes):
        for h in range(h_max - delta, delta, -1):
            for w in range(w_max - delta, delta, -1):
                dx, dy = rng.integers(-delta, delta, size=(2,))
                h_prime, w_prime = h + dy, w + dx
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return np.clip(gaussian(x / 255., sigma=sigma, channel_axis=-1), 0, 1) * 255


def motion_blur(x, severity, table, rng, motion=None):
    radius, sigma = _c("motion_blur", severity, table)
    out = motion(np.array(x, np.float64), radius=radius, sigma=sigma,
                 angle=rng.uniform(-45, 45))
    return np.clip(out, 0, 255)


def fog(x, severity, table, rng, plasma=None):
    strength, decay = _c("fog", severity, table)
    x = np.array(x) / 255.
    top = x.max()
    size = x.shape[0]
    mapsize = 1 << (size - 1).bit_length()
    x = x + strength * plasma(mapsize, decay)[:size, :size][..., None]
    return np.clip(x * top / (top + strength), 0, 1) * 255


def snow(x, severity, table, rng, motion=None):
    mean, std, zoom, threshold, radius, sigma, weight = _c("snow", severity, table)
    x = np.array(x, dtype=np.float32) / 255.
    layer = rng.normal(size=x.shape[:2], loc=mean, scale=std)
    layer = clipped_zoom(layer[..., None], zoom)
    layer[layer < threshold] = 0
    layer = np.round(np.clip(layer.squeeze(), 0, 1) * 255).astype(np.uint8)
    layer = motion(layer[..., None].astype(np.float64), radius=radius, sigma=sigma,
                   angle=rng.uniform(-135, -45))
    layer = np.round(np.clip(layer, 0, 255))[..., :1] / 255.
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
    x = weight * x + (1 - weight) * np.maximum(x, gray * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def elastic_transform(image, severity, table, rng):
    if table == "imagenet":  # imagecorruptions: a displacement field only
        image = np.array(image, dtype=np.float32) / 255.
        shape = image.shape
        alpha = _c("elastic_transform", severity, table)
        sigma = np.array(shape[:2]) * 0.01
        max_d = shape[0] * 0.005
        dx, dy = ((gaussian(rng.uniform(-max_d, max_d, size=shape[:2]), sigma, mode="reflect",
                            truncate=3) * alpha).astype(np.float32) for _ in range(2))
    else:
        size = SIZE[table]
        c = [size * f for f in _c("elastic_transform", severity, table)]
        image = np.array(image, dtype=np.float32) / 255.
        shape = image.shape
        shape_size = shape[:2]
        center_square = np.float32(shape_size) // 2
        square_size = min(shape_size) // 3
        pts1 = np.float32([center_square + square_size,
                           [center_square[0] + square_size, center_square[1] - square_size],
                           center_square - square_size])
        pts2 = pts1 + rng.uniform(-c[2], c[2], size=pts1.shape).astype(np.float32)
        m = cv2.getAffineTransform(pts1, pts2)
        image = cv2.warpAffine(image, m, shape_size[::-1], borderMode=cv2.BORDER_REFLECT_101)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dx, dy = ((gaussian(rng.uniform(-1, 1, size=shape[:2]), c[1], mode="reflect",
                                truncate=3) * c[0]).astype(np.float32) for _ in range(2))
    dx, dy = dx[..., None], dy[..., None]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = (np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)),
               np.reshape(z, (-1, 1)))
    return np.clip(map_coordinates(image, indices, order=1, mode="reflect").reshape(shape),
                   0, 1) * 255


RANDOM = {"gaussian_noise": gaussian_noise, "shot_noise": shot_noise,
          "impulse_noise": impulse_noise, "speckle_noise": speckle_noise,
          "glass_blur": glass_blur, "motion_blur": motion_blur, "fog": fog, "snow": snow,
          "elastic_transform": elastic_transform}
