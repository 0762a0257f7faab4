"""The ImageNet-C / MedMNIST-C suite against `imagecorruptions`, scikit-image, Pillow
and SciPy: deterministic kernels value for value, random ones by distribution."""

import functools
import io
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxrobust import corruptions
from jaxrobust.corruptions import _ops, weather

ic = pytest.importorskip("benchmarks.reference")
try:
    ic.load()
except ImportError:  # pragma: no cover - the compare extra is not installed
    pytest.skip("imagecorruptions is not installed", allow_module_level=True)

SUITE = [n for n in corruptions.names() if corruptions.get(n).severities is not None
         and n not in ("gaussian_noise",)]
SUITE.append("gaussian_noise")
RANDOM = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur",
          "motion_blur", "snow", "frost", "fog", "spatter", "elastic_transform"]


def _smooth_u8(rng, shape):
    """A fresh 8-bit test picture: smoothed noise with edges, as uint8."""
    noise = rng.random(shape)
    smooth = ndimage.gaussian_filter(noise, (3, 3, 0)[:len(shape)])
    smooth = (smooth - smooth.min()) / (np.ptp(smooth) + 1e-9)
    edges = (rng.random(shape) < 0.02) * rng.random(shape)
    return np.round(np.clip(smooth + edges, 0, 1) * 255).astype(np.uint8)


def _published_pixels(c):
    """Options that make a kernel use the published pixel values at any size."""
    return {"reference_size": None} if "reference_size" in c.apply.__code__.co_varnames else {}


@functools.cache
def _compiled(name):
    c = corruptions.get(name)
    return jax.jit(functools.partial(c.apply, **_published_pixels(c)))


def _apply(name, image, level, key=None):
    """The kernel, compiled once per name (and shape), at the published pixel sizes."""
    return np.asarray(_compiled(name)(jax.random.key(0) if key is None else key,
                                      jnp.asarray(image, jnp.float32), jnp.float32(level)))


def _published(name, severity):
    return corruptions.get(name).severities[severity - 1]


# ------------------------------------------------------------------ the contract


@pytest.mark.parametrize("name", SUITE)
def test_compiles_once_vmaps_and_is_reproducible(rng, name):
    c = corruptions.get(name)
    traces = []

    def kernel(key, image, level):
        traces.append(1)
        return c.apply(key, image, level)

    fn = jax.jit(jax.vmap(jax.vmap(kernel, in_axes=(0, None, None)), in_axes=(None, None, 0)))
    image = jnp.asarray(_smooth_u8(rng, (28, 28, 1)) / 255.0, jnp.float32)
    keys = jax.random.split(jax.random.key(int(rng.integers(1 << 30))), 2)
    levels = corruptions.severity(name, [1.0, 2.5, 5.0], image_size=28)
    out = np.asarray(fn(keys, image, levels))
    again = np.asarray(fn(keys, image, corruptions.severity(name, [0.5, 3.0, 4.0],
                                                            image_size=28)))
    assert len(traces) == 1, "a new level must not recompile"
    assert out.shape == (3, 2, 28, 28, 1) and np.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1 and np.isfinite(again).all()
    np.testing.assert_array_equal(out, np.asarray(fn(keys, image, levels)))  # same key
    # an element's result does not depend on the batch it is computed in
    np.testing.assert_array_equal(out[:, :1], np.asarray(fn(keys[:1], image, levels)))
    if name in RANDOM:
        assert not np.array_equal(out[:, 0], out[:, 1]), "other keys must give other draws"
    else:
        np.testing.assert_array_equal(out[:, 0], out[:, 1])
    if name != "saturate":  # a gray image has no saturation to change
        assert np.abs(out[-1, 0] - np.asarray(image)).mean() > 0  # it corrupts


@pytest.mark.parametrize("name", SUITE)
def test_rgb_224_and_severity_zero(rng, name):
    image = _smooth_u8(rng, (224, 224, 3)) / 255.0
    fn = jax.jit(corruptions.get(name).apply)
    key = jax.random.key(1)
    out = np.asarray(fn(key, jnp.asarray(image, jnp.float32),
                        jnp.float32(corruptions.severity(name, 3.0))))
    assert out.shape == (224, 224, 3) and np.isfinite(out).all()
    assert 0 <= out.min() and out.max() <= 1
    clean = np.asarray(fn(key, jnp.asarray(image, jnp.float32),
                          jnp.float32(corruptions.severity(name, 0.0))))
    if name == "jpeg_compression":  # quality 100 is the finest JPEG, not the identity
        assert np.abs(clean - image).mean() < 0.03
    else:
        np.testing.assert_allclose(clean, image, atol=2e-6)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="1 \\(grayscale\\) or 3 \\(RGB\\) channels"):
        corruptions.defocus_blur(None, jnp.zeros((32, 32, 2)), 1.0)
    with pytest.raises(ValueError, match="must lie in \\[0, 5\\]"):
        corruptions.snow(jax.random.key(0), jnp.zeros((32, 32, 1)), 6.0)
    with pytest.raises(ValueError, match="severity must lie in"):
        corruptions.severity("fog", 5.5)
    with pytest.raises(ValueError, match="no ImageNet-C severities"):
        corruptions.severity("median_blur", 1)
    traced = jax.jit(corruptions.jpeg_compression)(None, jnp.zeros((16, 16, 1)), 0.0)
    assert np.isnan(np.asarray(traced)).all()  # a traced level out of range: NaN


def test_severity_tables_interpolate_and_scale():
    np.testing.assert_allclose(corruptions.severity("shot_noise", [1, 5]), [1 / 60, 1 / 3])
    np.testing.assert_allclose(corruptions.severity("contrast", [0, 0.5, 1, 1.5]),
                               [1.0, 0.7, 0.4, 0.35], rtol=1e-6)
    np.testing.assert_allclose(corruptions.severity("gaussian_blur", 5, image_size=112), 3.0)
    np.testing.assert_allclose(corruptions.severity("fog", [0.0, 2.5]), [0.0, 2.5])
    # ImageNet-C's grouping: brightness is weather, gaussian_noise is noise (and study)
    assert corruptions.names("weather") == ["snow", "frost", "fog", "spatter", "brightness"]
    assert corruptions.names("noise") == ["gaussian_noise", "shot_noise", "impulse_noise",
                                          "speckle_noise"]
    assert corruptions.names("digital") == ["contrast", "elastic_transform", "pixelate",
                                            "jpeg_compression", "saturate"]
    assert set(corruptions.IMAGENET_C) | set(corruptions.IMAGENET_C_VALIDATION) <= set(
        corruptions.names())


# -------------------------------------------------------- deterministic parity


@pytest.mark.parametrize("name", ["gaussian_blur", "defocus_blur", "zoom_blur", "brightness",
                                  "contrast", "saturate"])
@pytest.mark.parametrize("shape", [(32, 32, 3), (40, 57, 3), (36, 36, 1)])
def test_deterministic_kernels_equal_imagecorruptions(rng, name, shape):
    u8 = _smooth_u8(rng, shape)
    for s in range(1, 6):
        ref = ic.corrupt(u8, name, s) / 255.0
        out = _apply(name, u8 / 255.0, _published(name, s))
        if shape[-1] == 1:
            ref = ref[..., :1]
        np.testing.assert_allclose(out, ref, atol=1e-4, err_msg=f"{name} severity {s}")


@pytest.mark.parametrize("shape", [(32, 32, 3), (45, 38, 3), (33, 40, 1)])
def test_pixelate_equals_imagecorruptions(rng, shape):
    u8 = rng.integers(0, 256, shape, dtype=np.uint8)  # noise: every window and tie shows
    for s in range(1, 6):
        ref = ic.corrupt(u8, "pixelate", s)[..., :shape[-1]]
        out = _apply("pixelate", u8 / 255.0, _published("pixelate", s)) * 255.0
        np.testing.assert_array_equal(np.round(out), ref, err_msg=f"severity {s}")
        assert np.abs(out - np.round(out)).max() < 1e-3


@pytest.mark.parametrize("table", ["imagenet", "cifar10"])
@pytest.mark.parametrize("factors", [[0.97, 0.71, 0.52, 0.33, 0.26, 0.19, 0.07, 1.0],
                                     [0.97, 0.52, 1.0], [0.71, 0.33, 0.26], [0.19, 0.52]],
                         ids=["wide", "band1", "band3", "band6"])
def test_pixelate_equals_pillow_at_any_factor(rng, table, factors):
    """Off the published factors too (every small size has Pillow's own windows), with
    the factor batched; each batch runs the narrowest fused band that holds all its
    windows, or the widest band and a loop (factor < 1/6)."""
    from PIL import Image

    up = Image.NEAREST if table == "imagenet" else Image.BOX
    # 8 images whatever the list (its factors repeated: the same band is chosen), so
    # that every case of a table runs the one compiled program
    factors = np.resize(np.array(factors, np.float32), 8)
    h, w = 41, 30
    u8 = rng.integers(0, 256, (len(factors), h, w, 3), dtype=np.uint8)
    kernel = corruptions.get("pixelate", table=table).apply
    out = np.asarray(jax.jit(jax.vmap(kernel))(jax.random.split(jax.random.key(0), len(factors)),
                                               jnp.asarray(u8 / 255.0, jnp.float32),
                                               jnp.asarray(factors))) * 255.0
    for i, f in enumerate(factors.astype(float)):
        small = Image.fromarray(u8[i]).resize((max(int(w * f), 1), max(int(h * f), 1)),
                                              Image.BOX)
        np.testing.assert_array_equal(np.round(out[i]), np.asarray(small.resize((w, h), up)),
                                      err_msg=f"factor {f}")


def test_pixelate_vmapped_over_images_and_factors(rng):
    """The kernel's batching rule folds images and factors however they are vmapped
    (an image shared by its factors is not copied): every nesting equals one call per
    pair, and an out-of-range factor gives NaN."""
    u8 = rng.integers(0, 256, (3, 20, 27, 3), dtype=np.uint8)
    images = jnp.asarray(u8 / 255.0, jnp.float32)
    factors = jnp.asarray([0.6, 0.25, 0.1, 2.0])
    kernel = corruptions.get("pixelate").apply
    key = jax.random.key(0)
    single = jax.jit(kernel)  # traced factor: out of range gives NaN, not an error
    one = np.stack([np.stack([np.asarray(single(key, x, f)) for f in factors]) for x in images])
    by_image = jax.vmap(jax.vmap(kernel, (None, None, 0)), (None, 0, None))(key, images, factors)
    by_factor = jax.vmap(jax.vmap(kernel, (None, 0, None)), (None, None, 0))(key, images, factors)
    pairs = jax.vmap(kernel, (None, 0, 0))(key, images, factors[:3])
    np.testing.assert_array_equal(np.asarray(by_image), one)
    np.testing.assert_array_equal(np.asarray(by_factor), one.swapaxes(0, 1))
    np.testing.assert_array_equal(np.asarray(pairs), one[[0, 1, 2], [0, 1, 2]])
    assert np.isnan(one[:, 3]).all() and not np.isnan(one[:, :3]).any()


def test_gamma_equals_skimage(rng):
    from skimage.exposure import adjust_gamma

    image = rng.random((30, 31, 3)).astype(np.float32)
    for g in (0.4, 0.9, 1.1, 1.6, 3.0):
        np.testing.assert_allclose(_apply("gamma", image, g), adjust_gamma(image, g),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(48, 64, 1), (37, 53, 3), (32, 32, 3)])
def test_jpeg_equals_pillow(rng, shape):
    from PIL import Image

    smooth = _smooth_u8(rng, shape)
    noise = rng.integers(0, 256, shape, dtype=np.uint8)
    for quality, u8 in ((1, smooth), (7, noise), (15, smooth), (25, noise), (60, smooth),
                        (95, noise), (100, smooth)):
        buf = io.BytesIO()
        Image.fromarray(u8.squeeze(-1) if shape[-1] == 1 else u8).save(buf, "JPEG",
                                                                      quality=quality)
        ref = np.asarray(Image.open(buf), np.float64).reshape(u8.shape)
        out = _apply("jpeg_compression", u8 / 255.0, quality) * 255.0
        # libjpeg's integer codec, value for value
        np.testing.assert_allclose(out, ref, atol=1e-3, err_msg=f"quality {quality}")


def test_motion_blur_streak_equals_reference(rng):
    from imagecorruptions import corruptions as ref_mod

    image = _smooth_u8(rng, (40, 48, 3)).astype(np.float32)
    for radius, sigma, angle in ((10, 3, -31.3), (15, 8, 44.0), (3, 2, 7.7)):
        ref = ref_mod._motion_blur(image, radius=radius, sigma=sigma, angle=angle)
        out = _ops.motion_blur_image(jnp.asarray(image), radius, sigma, angle, 20)
        np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-3)


def test_elastic_warp_and_field_filter_equal_scipy(rng):
    from skimage.filters import gaussian

    image = rng.random((30, 34, 3)).astype(np.float32)
    dy, dx = (rng.standard_normal((2, 30, 34)) * 4).astype(np.float32)
    ys, xs = np.meshgrid(np.arange(30), np.arange(34), indexing="ij")
    ref = np.stack([ndimage.map_coordinates(image[..., c], [ys + dy, xs + dx], order=1,
                                            mode="reflect") for c in range(3)], -1)
    out = _ops.bilinear_sample(jnp.asarray(image), jnp.asarray(ys + dy, jnp.float32),
                               jnp.asarray(xs + dx, jnp.float32), "reflect")
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)
    noise = rng.uniform(-1, 1, (30, 34, 1)).astype(np.float32)
    ref = gaussian(noise[..., 0], (0.3, 0.34), mode="reflect", truncate=3)
    out = _ops.gaussian_blur_image(jnp.asarray(noise), (0.3, 0.34), 0.34, mode="reflect",
                                   truncate=3.0)
    np.testing.assert_allclose(np.asarray(out)[..., 0], ref, atol=1e-6)


def test_plasma_fractal_has_the_reference_distribution():
    from imagecorruptions import corruptions as ref_mod

    np.random.seed(0)  # noqa: NPY002 - the reference draws from NumPy's global state
    ref = np.array([ref_mod.plasma_fractal(32, 1.7) for _ in range(300)])
    ours = np.asarray(jax.jit(jax.vmap(lambda k: weather.plasma_fractal(k, 32, 1.7)))(
        jax.random.split(jax.random.key(3), 300)))
    assert abs(ref.mean() - ours.mean()) < 0.02
    assert abs(ref.std() - ours.std()) < 0.01
    # spatial correlation at 1 and 8 pixels
    for lag in (1, 8):
        corr = [np.corrcoef(a[:, :-lag].ravel(), a[:, lag:].ravel())[0, 1]
                for a in (ref.reshape(-1, 32), ours.reshape(-1, 32))]
        assert abs(corr[0] - corr[1]) < 0.03


# ------------------------------------------------------------ random parity


def _stats(images):
    a = np.asarray(images)
    return {"mean": a.mean(), "std": a.std(), "zeros": (a <= 0.5 / 255).mean(),
            "ones": (a >= 254.5 / 255).mean()}


#: tolerances: mean and std, clipped fractions, mean change (relative)
_TOL = {"glass_blur": (0.01, 0.03, 0.3), "frost": (0.12, 0.12, 0.5),
        "fog": (0.06, 0.03, 0.25), "snow": (0.02, 0.07, 0.1)}


@pytest.mark.parametrize("name", RANDOM)
def test_random_kernels_match_reference_distribution(rng, name):
    u8 = _smooth_u8(rng, (48, 48, 3))
    x = u8 / 255.0
    c = corruptions.get(name)
    kw = _published_pixels(c)
    fn = jax.jit(jax.vmap(lambda k, lv: c.apply(k, jnp.asarray(x, jnp.float32), lv, **kw),
                          in_axes=(0, None)))
    abs_tol, clip_tol, rel_tol = _TOL.get(name, (0.01, 0.03, 0.1))
    np.random.seed(int(rng.integers(1 << 31)))  # noqa: NPY002 - the reference's global state
    for s in (1, 3, 5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = np.array([ic.corrupt(u8, name, s) / 255.0 for _ in range(6)])
        ours = np.asarray(fn(jax.random.split(jax.random.key(int(rng.integers(1 << 30))), 6),
                             jnp.float32(_published(name, s))))
        r, o = _stats(ref), _stats(ours)
        for k in r:
            tol = abs_tol if k in ("mean", "std") else clip_tol
            assert abs(r[k] - o[k]) <= tol, (name, s, k, r[k], o[k])
        change_r = np.abs(ref - x).mean()
        change_o = np.abs(ours - x).mean()
        assert abs(change_o - change_r) <= rel_tol * change_r + 2e-3, (name, s, change_r,
                                                                      change_o)


def test_shot_noise_is_poisson_counts(rng):
    from scipy import stats

    for photons, intensity in ((12, 0.5), (60, 0.37), (3, 0.913)):  # on and off the grid
        x = np.full((96, 96, 1), intensity, np.float32)
        out = _apply("shot_noise", x, 1 / photons,
                     key=jax.random.key(int(rng.integers(1 << 30))))
        counts = out.ravel() * photons
        np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)  # whole photons
        lam = photons * intensity
        ks = np.arange(int(lam * 3 + 20))
        observed = np.bincount(np.round(counts).astype(int), minlength=len(ks))[:len(ks)]
        expected = stats.poisson.pmf(ks, lam) * counts.size
        keep = expected > 5
        # clipping at 1 folds counts above `photons` into it: compare below it only
        keep &= ks < photons
        chi2 = np.sum((observed[keep] - expected[keep]) ** 2 / expected[keep])
        assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-4, (photons, intensity, chi2)


@pytest.mark.parametrize("mode", ["nearest", "reflect", "mirror", "wrap"])
def test_separable_filter_matches_scipy_correlate(rng, mode):
    from scipy import ndimage

    # radius 9 > the 7-pixel axis: the boundary rule repeats, as scipy's does
    for shape, ry, rx in (((23, 17, 3), 2, 4), ((7, 12), 9, 1), ((5, 6, 1), 0, 3)):
        image = rng.random(shape).astype(np.float32)
        wy = rng.uniform(-1, 1, 2 * ry + 1).astype(np.float32)
        wx = rng.uniform(-1, 1, 2 * rx + 1).astype(np.float32)
        ref = ndimage.correlate1d(image.astype(np.float64), wy, axis=0, mode=mode)
        ref = ndimage.correlate1d(ref, wx, axis=1, mode=mode)
        out = jax.jit(lambda x, a, b: _ops.filter_separable(x, a, b, mode))(image, wy, wx)
        assert out.shape == image.shape
        np.testing.assert_allclose(np.asarray(out), ref, atol=2e-5)


def test_poisson_inversion_is_exact_on_its_table(rng):
    from scipy import stats

    from jaxrobust.corruptions import noise

    table = noise._poisson_cdf_table().reshape(-1, noise._COUNTS)
    rows = np.concatenate([[0, 1, 2, noise._ROWS], rng.integers(0, noise._ROWS + 1, 60)])
    lam = rows * noise._STEP
    np.testing.assert_allclose(table[rows, :-1], stats.poisson.cdf(
        np.arange(noise._COUNTS - 1), lam[:, None]), rtol=0, atol=2e-6)
    # the windowed search equals a full search of the row, for u across (1e-7, 1)
    # and at its ends, where the normal-approximation guess is furthest off
    u = np.concatenate([rng.uniform(1e-7, 1, (len(rows), 400)),
                        np.tile([1e-7, 1e-6, 0.5, 1 - 1e-6, 1 - 6e-8], (len(rows), 1))],
                       axis=1).astype(np.float32)
    lam_f = np.broadcast_to(lam[:, None], u.shape).astype(np.float32)
    counts = jax.jit(lambda u, lam: noise._poisson(u.reshape(-1), lam.reshape(-1))[0])
    got = counts(u, lam_f).reshape(u.shape)
    want = np.stack([np.searchsorted(table[r], u_r, side="left")
                     for r, u_r in zip(rows, u, strict=True)])
    np.testing.assert_array_equal(np.asarray(got), want)
