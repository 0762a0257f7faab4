"""Kernels against their references: OpenCV, scikit-image, and statistics."""

import functools

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_image
from skimage.filters import median
from skimage.morphology import disk
from skimage.util import random_noise

from jaxrobust import corruptions
from jaxrobust.corruptions import gaussian_noise, median_blur, scale_up

KEY = jax.random.key(0)


def _skimage_median(image, r):
    return np.stack(
        [median(image[..., c], disk(r), mode="nearest") for c in range(image.shape[-1])], -1
    )


# ---------------------------------------------------------------- scale_up


@pytest.mark.parametrize("channels", [1, 3])
def test_scale_up_matches_cv2_for_integer_crops(rng, channels):
    image = random_image(rng, (37, 53, channels), eight_bit=False)
    fn = jax.jit(scale_up)
    for c in range(0, 18):
        ref = cv2.resize(image[c:37 - c, c:53 - c], (53, 37), interpolation=cv2.INTER_LINEAR)
        ref = ref.reshape(image.shape)
        out = np.asarray(fn(KEY, image, c))
        np.testing.assert_allclose(out, ref, atol=1e-4, err_msg=f"crop={c}")


def test_scale_up_fractional_crop_is_continuous(rng):
    image = random_image(rng, (40, 40, 1), eight_bit=False)
    fn = jax.jit(scale_up)
    a = np.asarray(fn(KEY, image, 3.0))
    b = np.asarray(fn(KEY, image, 3.0 + 1e-3))
    mid = np.asarray(fn(KEY, image, 3.5))
    assert np.max(np.abs(a - b)) < 1e-2
    assert np.max(np.abs(a - mid)) > 1e-3  # it does move between integer crops
    np.testing.assert_array_equal(np.asarray(fn(KEY, image, 0.0)), image)


# ---------------------------------------------------------------- median_blur


@pytest.mark.parametrize("eight_bit", [True, False])
@pytest.mark.parametrize("channels", [1, 3])
def test_median_blur_bit_exact_to_skimage_every_radius(rng, eight_bit, channels):
    image = random_image(rng, (37, 53, channels), eight_bit=eight_bit)
    fn = jax.jit(median_blur)
    for r in range(0, 20):
        out = np.asarray(fn(KEY, image, r))
        np.testing.assert_array_equal(out, _skimage_median(image, r), err_msg=f"radius={r}")


def test_median_blur_smooth_image_and_quantised_floats(rng):
    # Natural-image statistics (the median moves slowly) and 8-bit data that was scaled
    # in float64 before the cast, as np.asarray(uint8) / 255.0 does.
    yy, xx = np.mgrid[0:45, 0:61]
    smooth = (0.5 + 0.4 * np.sin(yy / 7.0) * np.cos(xx / 9.0))[..., None]
    image = (np.round(smooth * 255) / 255.0).astype(np.float32)
    image += (rng.integers(-3, 4, image.shape) / 255.0).astype(np.float32)
    image = np.clip(image, 0, 1).astype(np.float32)
    fn = jax.jit(median_blur)
    for r in (1, 4, 11, 19):
        np.testing.assert_array_equal(np.asarray(fn(KEY, image, r)), _skimage_median(image, r))


def test_median_blur_batches_at_radius_19(rng):
    images = np.stack([random_image(rng, (31, 29, 1), eight_bit=b) for b in (True, True, False)])
    batched = jax.jit(jax.vmap(median_blur, in_axes=(None, 0, None)))
    out = np.asarray(batched(KEY, images, 19))
    for i, image in enumerate(images):
        np.testing.assert_array_equal(out[i], _skimage_median(image, 19))
    # an all-8-bit batch takes the other path; it must agree too
    out8 = np.asarray(batched(KEY, images[:2], 19))
    np.testing.assert_array_equal(out8, out[:2])


def test_median_blur_tall_image_wide_histogram_positions(rng):
    # 300 rows: 256 bins x 300 lanes no longer fit the 8-bit path's uint16 positions,
    # so it takes its int32 variant; both must stay exact
    image = random_image(rng, (300, 23, 1), eight_bit=True)
    fn = jax.jit(lambda x, r: median_blur(KEY, x, r, max_radius=5))
    for r in (4, 5):
        np.testing.assert_array_equal(np.asarray(fn(image, r)), _skimage_median(image, r))


def test_median_blur_vmap_over_images_and_radii(rng):
    images = np.stack([random_image(rng, (23, 27, 1), eight_bit=True) for _ in range(3)])
    radii = jnp.asarray([0.0, 2.0, 7.0])
    grid = jax.jit(
        jax.vmap(jax.vmap(median_blur, in_axes=(None, 0, None)), in_axes=(None, None, 0))
    )(KEY, images, radii)
    assert grid.shape == (3, 3, 23, 27, 1)
    for j, r in enumerate([0, 2, 7]):
        for i in range(3):
            np.testing.assert_array_equal(np.asarray(grid[j, i]), _skimage_median(images[i], r))


def test_median_blur_small_float_radii_each_network_and_mixed(rng):
    # footprints inside disk(0..3) go through networks of 1, 8, 16 or 32 inputs, the
    # smallest that holds the whole batch (whatever the values): each alone, and
    # batches that mix them
    image = random_image(rng, (19, 23, 1), eight_bit=False)
    radii = np.asarray([0.0, 0.6, 1.0, 1.4, 1.5, 2.0, 2.3, 2.5, 2.9, 3.0, 3.2, 3.5, 3.7],
                       np.float32)
    refs = {float(r): median(image[..., 0], disk(r), mode="nearest")[..., None] for r in radii}
    small = functools.partial(median_blur, max_radius=4)  # a smaller program to compile
    one = jax.jit(lambda x, r: small(KEY, x, r))
    for r in radii:
        np.testing.assert_array_equal(np.asarray(one(image, r)), refs[float(r)],
                                      err_msg=f"radius={r}")
    grid = jax.jit(jax.vmap(small, in_axes=(None, None, 0)))
    for mix in ([0.0, 1.0, 0.0], [0.6, 1.5, 2.0], [1.0, 2.5, 3.0], [0.0, 3.5, 1.4]):
        out = np.asarray(grid(KEY, image, jnp.asarray(mix, jnp.float32)))
        for j, r in enumerate(mix):
            np.testing.assert_array_equal(out[j], refs[float(np.float32(r))], err_msg=f"{mix}")


# ---------------------------------------------------------------- gaussian_noise


def test_gaussian_noise_distribution_and_clipping_match_skimage(rng):
    sigma = 0.1
    for value in (0.5, 0.03):
        image = np.full((96, 96, 1), value, np.float32)
        ours = np.asarray(gaussian_noise(jax.random.key(rng.integers(1 << 30)), image, sigma))
        ref = random_noise(image, mode="gaussian", var=sigma**2, clip=True,
                           rng=int(rng.integers(1 << 30)))
        assert ours.min() >= 0.0 and ours.max() <= 1.0
        # same clipped distribution: mean, spread and fraction clipped at 0
        assert abs(ours.mean() - ref.mean()) < 4e-3
        assert abs(ours.std() - ref.std()) < 4e-3
        assert abs((ours == 0).mean() - (ref == 0).mean()) < 0.02
    # unclipped: exactly N(value, sigma^2)
    image = np.full((128, 128, 1), 0.5, np.float32)
    noise = np.asarray(gaussian_noise(KEY, image, 0.05)) - 0.5
    assert abs(noise.mean()) < 1e-3 and abs(noise.std() - 0.05) < 1e-3


def test_gaussian_noise_is_reproducible_from_its_key(rng):
    image = random_image(rng, (16, 16, 3), eight_bit=False)
    a = gaussian_noise(jax.random.key(7), image, 0.1)
    again = gaussian_noise(jax.random.key(7), image, 0.1)
    jitted = jax.jit(gaussian_noise)(jax.random.key(7), image, 0.1)
    c = gaussian_noise(jax.random.key(8), image, 0.1)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(again))
    np.testing.assert_allclose(np.asarray(a), np.asarray(jitted), atol=1e-6)  # fused FMAs
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    np.testing.assert_array_equal(np.asarray(gaussian_noise(KEY, image, 0.0)), image)


def test_gaussian_and_speckle_noise_draw_jax_random_normal(rng):
    # the normals are `jax.random.normal(key, (image.size,))`'s (drawn in two compiled
    # loops, `_prng.normal_uniforms` and `_prng.normal_of`), added as the docstrings say
    image = random_image(rng, (12, 10, 3), eight_bit=False)
    key = jax.random.key(int(rng.integers(1 << 30)))
    z = np.asarray(jax.random.normal(key, (image.size,))).reshape(image.shape)
    for kernel, want in ((gaussian_noise, image + np.float32(0.2) * z),
                         (corruptions.get("speckle_noise").apply,
                          image + image * np.float32(0.2) * z)):
        got = np.asarray(jax.jit(kernel)(key, image, 0.2))
        np.testing.assert_allclose(got, np.clip(want, 0, 1), rtol=0, atol=2e-7)


def test_impulse_noise_draws_jax_random_uniform(rng):
    # one uniform per value, `jax.random.uniform(key, (image.size,))`'s (the hash
    # written out in `_prng`): u < amount replaces the value, u < amount / 2 with salt
    image = random_image(rng, (12, 10, 3), eight_bit=False)
    key = jax.random.key(int(rng.integers(1 << 30)))
    u = np.asarray(jax.random.uniform(key, (image.size,))).reshape(image.shape)
    want = np.where(u < 0.3, (u < 0.15).astype(np.float32), image)
    got = np.asarray(jax.jit(corruptions.get("impulse_noise").apply)(key, image, 0.3))
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- all kernels


@pytest.mark.parametrize("name", corruptions.names("study"))  # the suite: test_suite.py
def test_jit_equals_eager_and_vmap_equals_loop(rng, name):
    c = corruptions.get(name)
    images = random_image(rng, (3, 21, 25, 1), eight_bit=True)
    levels = jnp.asarray(corruptions.seed_levels(name)[[1, 5, 9]])
    keys = jax.random.split(KEY, 3)
    eager = [np.asarray(c.apply(keys[i], images[i], levels[i])) for i in range(3)]
    jitted = [np.asarray(jax.jit(c.apply)(keys[i], images[i], levels[i])) for i in range(3)]
    mapped = np.asarray(jax.jit(jax.vmap(c.apply))(keys, images, levels))
    for i in range(3):
        np.testing.assert_allclose(jitted[i], eager[i], atol=1e-5)
        np.testing.assert_allclose(mapped[i], jitted[i], atol=1e-5)


@pytest.mark.parametrize("name", corruptions.names("study"))
def test_one_compiled_program_serves_every_level(name):
    c = corruptions.get(name)
    traces = []

    @jax.jit
    def run(image, level):
        traces.append(1)
        return c.apply(KEY, image, level)

    image = jnp.full((20, 22, 1), 0.25, jnp.float32)
    for level in corruptions.seed_levels(name)[:6]:
        run(image, jnp.asarray(level, jnp.float32)).block_until_ready()
    assert len(traces) == 1


# ---------------------------------------------------------------- registry and schedules


def test_registry_names_aliases_and_labels():
    assert corruptions.names("study") == ["scale_up", "median_blur", "gaussian_noise"]
    assert len(corruptions.names()) == 22  # + ImageNet-C's 15 + 4 and MedMNIST-C's gamma
    for alias, name in [("crop", "scale_up"), ("blur", "median_blur"), ("noise", "gaussian_noise"),
                        ("jpeg", "jpeg_compression"), ("Speckle", "speckle_noise")]:
        assert corruptions.get(alias).name == name
    labels = [corruptions.get(n).label for n in corruptions.names("study")]
    assert labels == ["Crop", "Blur", "Noise"]
    with pytest.raises(ValueError, match="known corruptions: scale_up"):
        corruptions.get("hail")


def test_seed_levels_follow_the_studys_loop():
    # The study's loop, transcribed: intensity starts at -0.05 and grows by 0.05 a step
    # (plus 0.06 for Crop); crop 4*intensity px, radius intensity/0.05, sigma intensity/20.
    expected = {"Crop": [], "Noise": [], "Blurr": []}
    for kind in expected:
        intensity = -0.05
        for _ in range(20 if kind == "Blurr" else 50):
            intensity += 0.05
            if kind == "Crop":
                intensity += 0.06
                expected[kind].append(4 * intensity)
            elif kind == "Blurr":
                expected[kind].append(intensity / 0.05)
            else:
                expected[kind].append(intensity / 20.0)
    np.testing.assert_allclose(corruptions.seed_levels("crop"), expected["Crop"], atol=1e-5)
    np.testing.assert_allclose(corruptions.seed_levels("blur"), expected["Blurr"], atol=1e-5)
    np.testing.assert_allclose(corruptions.seed_levels("noise"), expected["Noise"], atol=1e-6)
    half = corruptions.seed_levels("blur", image_size=87)
    np.testing.assert_array_equal(half, np.round(np.arange(20) / 2.0))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", corruptions.names())
def test_bad_images_are_rejected(name):
    apply = corruptions.get(name).apply
    with pytest.raises(ValueError, match="float32"):
        apply(KEY, np.zeros((8, 8, 1), np.uint8), 1.0)
    with pytest.raises(ValueError, match="channel axis"):
        apply(KEY, np.zeros((8, 8), np.float32), 1.0)
    with pytest.raises(ValueError, match="vmap"):
        apply(KEY, np.zeros((2, 8, 8, 1), np.float32), 1.0)
    with pytest.raises(ValueError, match="must lie in"):
        apply(KEY, np.zeros((8, 8, 1), np.float32), -100.0)


def test_levels_out_of_range():
    image = np.zeros((9, 9, 1), np.float32)
    with pytest.raises(ValueError, match=r"\[0, 19.5\]"):
        median_blur(KEY, image, 20)
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        scale_up(KEY, image, 4.5)
    with pytest.raises(ValueError, match="max_radius"):
        median_blur(KEY, image, 1, max_radius=-2)
    assert median_blur(KEY, image, 5, max_radius=5).shape == image.shape
    # a traced level cannot raise: the image comes back NaN instead of silently wrong
    out = jax.jit(median_blur)(KEY, image, jnp.float32(25))
    assert np.isnan(np.asarray(out)).all()
    out = jax.jit(gaussian_noise)(KEY, image, jnp.float32(-0.5))
    assert np.isnan(np.asarray(out)).all()
