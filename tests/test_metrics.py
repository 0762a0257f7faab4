"""SSIM and PSNR against scikit-image on fresh random inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jaxrobust.metrics import psnr, ssim, ssim_compare, ssim_reference


def _pair(rng, shape):
    a = random_image(rng, shape, eight_bit=False)
    noise = rng.uniform(0.0, 0.3) * rng.standard_normal(shape)
    b = np.clip(a + noise, 0, 1).astype(np.float32)
    return a, b


@pytest.mark.parametrize("trial", range(8))
def test_ssim_matches_skimage_random_hyperparameters(rng, trial):
    shape = (int(rng.integers(15, 60)), int(rng.integers(15, 60)), int(rng.choice([1, 3])))
    a, b = _pair(rng, shape)
    kwargs = {
        "gaussian_weights": bool(rng.integers(2)),
        "use_sample_covariance": bool(rng.integers(2)),
        "data_range": float(rng.choice([1.0, 2.0])),
    }
    if kwargs["gaussian_weights"]:
        kwargs["sigma"] = float(rng.uniform(0.8, 2.0))
        # an explicit window with Gaussian weights: skimage keeps the 3.5-sigma filter
        # (reflected at the border) and crops by the window
        kwargs["win_size"] = [None, 3, 5, 7, 13][trial % 5]
    else:
        kwargs["win_size"] = int(rng.choice([3, 5, 7, 9]))
    k1, k2 = float(rng.uniform(0.0, 0.05)), float(rng.uniform(0.0, 0.1))
    ref = structural_similarity(a, b, channel_axis=-1, K1=k1, K2=k2, **kwargs)
    ours = float(jax.jit(lambda x, y: ssim(x, y, k1=k1, k2=k2, **kwargs))(a, b))
    assert abs(ours - ref) < 1e-5, (kwargs, ours, ref)


@pytest.mark.parametrize("win_size", [3, 5, 7])
def test_ssim_gaussian_weights_with_a_small_window_matches_skimage(rng, win_size):
    a, b = _pair(rng, (23, 31, 3))
    ref = structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True,
                                win_size=win_size)
    assert abs(float(ssim(a, b, gaussian_weights=True, win_size=win_size)) - ref) < 1e-5


@pytest.mark.parametrize("option", [{"sigma": -1.0, "gaussian_weights": True},
                                    {"k1": -0.01}, {"k2": -0.03}])
def test_ssim_raises_where_skimage_raises(rng, option):
    a, b = _pair(rng, (16, 16, 1))
    names = {"k1": "K1", "k2": "K2"}
    theirs = {names.get(k, k): v for k, v in option.items()}
    with pytest.raises(ValueError, match="must be positive"):
        structural_similarity(a, b, channel_axis=-1, data_range=1.0, **theirs)
    with pytest.raises(ValueError, match="must be positive"):
        ssim(a, b, **option)


@pytest.mark.parametrize("gaussian", [False, True])
def test_ssim_reference_compared_with_many_images_matches_skimage(rng, gaussian):
    """One reference (the sweep's clean image) against a batch of others, vmapped."""
    a = random_image(rng, (33, 41, 3), eight_bit=True)
    others = np.stack([_pair(rng, a.shape)[1] for _ in range(3)] + [a])
    kwargs = {"gaussian_weights": gaussian, "use_sample_covariance": not gaussian}
    kwargs.update({"sigma": 1.2} if gaussian else {"win_size": 5})
    reference = ssim_reference(a, **kwargs)
    ours = jax.jit(jax.vmap(lambda b: ssim_compare(reference, b, **kwargs)))(others)
    refs = [structural_similarity(a, b, channel_axis=-1, data_range=1.0, **kwargs)
            for b in others]
    np.testing.assert_allclose(np.asarray(ours), refs, atol=1e-5)
    assert float(ours[-1]) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        ssim_compare(reference, a[:-1], **kwargs)


def test_ssim_constant_and_identical_images(rng):
    flat = np.full((20, 24, 1), 0.4, np.float32)
    other = random_image(rng, (20, 24, 1), eight_bit=True)
    assert float(ssim(flat, flat)) == pytest.approx(1.0)
    assert float(ssim(other, other)) == pytest.approx(1.0, abs=1e-6)
    ref = structural_similarity(flat, other, data_range=1.0, channel_axis=-1)
    assert abs(float(ssim(flat, other)) - ref) < 1e-5
    for g in (False, True):
        ref = structural_similarity(flat, flat * 0.5, data_range=1.0, channel_axis=-1,
                                    gaussian_weights=g)
        assert abs(float(ssim(flat, flat * 0.5, gaussian_weights=g)) - ref) < 1e-5


def test_ssim_bounds_vmap_and_finite_gradient_on_flat_images(rng):
    a = random_image(rng, (4, 18, 18, 1), eight_bit=False)
    b = random_image(rng, (4, 18, 18, 1), eight_bit=False)
    batched = np.asarray(jax.vmap(ssim)(a, b))
    assert batched.shape == (4,)
    assert np.all(batched <= 1.0) and np.all(batched >= -1.0)
    for i in range(4):
        assert batched[i] == pytest.approx(float(ssim(a[i], b[i])), abs=1e-6)
    flat = jnp.full((18, 18, 1), 0.5)
    grad = jax.grad(lambda x: ssim(x, flat))(flat)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_ssim_rejects_bad_input():
    a = np.zeros((10, 10, 1), np.float32)
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(a, np.zeros((10, 11, 1), np.float32))
    with pytest.raises(ValueError, match="odd"):
        ssim(a, a, win_size=4)
    with pytest.raises(ValueError, match="smaller than"):
        ssim(np.zeros((5, 5, 1), np.float32), np.zeros((5, 5, 1), np.float32))


def test_psnr_matches_skimage(rng):
    a, b = _pair(rng, (33, 41, 3))
    for data_range in (1.0, 2.0):
        ref = peak_signal_noise_ratio(a, b, data_range=data_range)
        assert float(psnr(a, b, data_range=data_range)) == pytest.approx(ref, abs=1e-4)
