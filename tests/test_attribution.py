"""Attributions against Captum on the same network and weights (Flax -> PyTorch)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.attribution import torch_twin
from jaxrobust import attribution, models

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
captum_attr = pytest.importorskip("captum.attr", reason="captum is not installed")

SHAPE = (16, 16, 1)


@pytest.fixture(scope="module")
def nets():
    net = models.get("small_cnn", num_classes=4, input_shape=SHAPE, width=0.25, hidden=16,
                     seed=3)
    apply_fn, params = models.pure(net)
    return apply_fn, params, torch_twin(net)


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _close(ours, theirs):
    theirs = theirs.detach().numpy().transpose(0, 2, 3, 1)
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("method", attribution.METHODS)
def test_integrated_gradients_match_captum(rng, nets, method):
    apply_fn, params, tnet = nets
    x = rng.random((5, *SHAPE), dtype=np.float32)
    targets = rng.integers(0, 4, 5)
    np.testing.assert_allclose(np.asarray(apply_fn(params, x)),
                               tnet(_nchw(x)).detach().numpy(), rtol=1e-4, atol=1e-5)
    ours = attribution.integrated_gradients(apply_fn, params, x, targets, steps=24,
                                            method=method, chunk_size=5)
    ig = captum_attr.IntegratedGradients(tnet)
    theirs = ig.attribute(_nchw(x), baselines=torch.zeros_like(_nchw(x)),
                          target=torch.from_numpy(targets).long(), n_steps=24, method=method)
    _close(ours, theirs)


def test_saliency_and_input_x_gradient_match_captum(rng, nets):
    apply_fn, params, tnet = nets
    x = rng.random((3, *SHAPE), dtype=np.float32)
    targets = rng.integers(0, 4, 3)
    t = torch.from_numpy(targets).long()
    _close(attribution.saliency(apply_fn, params, x, targets),
           captum_attr.Saliency(tnet).attribute(_nchw(x), target=t))
    _close(attribution.gradient_x_input(apply_fn, params, x, targets),
           captum_attr.InputXGradient(tnet).attribute(_nchw(x), target=t))


def test_completeness_delta_shrinks_with_steps_and_chunking_is_invisible(rng, nets):
    apply_fn, params, _ = nets
    x = rng.random((4, *SHAPE), dtype=np.float32)
    targets = np.array([0, 1, 2, 3])
    deltas = []
    for steps in (4, 16, 64):
        _, d = attribution.integrated_gradients(apply_fn, params, x, targets, steps=steps,
                                                method="riemann_left", return_delta=True)
        deltas.append(float(jnp.abs(d).mean()))
    assert deltas[0] > deltas[1] > deltas[2]  # first-order rule: error ~ 1 / steps
    a = attribution.integrated_gradients(apply_fn, params, x, targets, steps=20, chunk_size=3)
    b = attribution.integrated_gradients(apply_fn, params, x, targets, steps=20, chunk_size=20)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_baselines_smoothgrad_and_bad_input(rng, nets):
    apply_fn, params, _ = nets
    x = rng.random((2, *SHAPE), dtype=np.float32)
    for kind in ("black", "white", "blur"):
        out = attribution.integrated_gradients(apply_fn, params, x, [0, 1], steps=8,
                                               baseline=kind)
        assert out.shape == x.shape and np.all(np.isfinite(np.asarray(out)))
    noise = attribution.make_baseline(jax.random.key(0), "uniform", x)
    out = attribution.integrated_gradients(apply_fn, params, x, 1, steps=8, baseline=noise)
    assert out.shape == x.shape
    sg = attribution.smoothgrad(jax.random.key(1), apply_fn, params, x, [0, 1], samples=4)
    assert sg.shape == x.shape
    with pytest.raises(ValueError, match="unknown method"):
        attribution.integrated_gradients(apply_fn, params, x, [0, 1], method="simpson")
    with pytest.raises(ValueError, match="integer class indices"):
        attribution.saliency(apply_fn, params, x, [0.5, 1.0])
    with pytest.raises(ValueError, match="output_weights="):  # float targets are weights
        attribution.integrated_gradients(apply_fn, params, x, np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="not both"):
        attribution.integrated_gradients(apply_fn, params, x, [0, 1],
                                         output_weights=np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="output_weights must be"):
        attribution.integrated_gradients(apply_fn, params, x,
                                         output_weights=np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="make_baseline"):
        attribution.integrated_gradients(apply_fn, params, x, 1, baseline="uniform")
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        attribution.saliency(apply_fn, params, x[0], 0)


def test_blur_baseline_equals_scipy(rng):
    from scipy import ndimage

    x = rng.random((2, 17, 13, 3), dtype=np.float32)
    got = attribution.make_baseline(None, "blur", x, sigma=2.5)
    want = ndimage.gaussian_filter(x.astype(np.float64), sigma=(0, 2.5, 2.5, 0),
                                   mode="mirror", truncate=3.0)
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=2e-6)


def test_several_targets_in_one_pass_equal_separate_runs(rng, nets):
    apply_fn, params, _ = nets
    x = rng.random((3, *SHAPE), dtype=np.float32)
    pairs = np.array([[0, 2], [1, 3], [2, 0]])
    both, delta = attribution.integrated_gradients(apply_fn, params, x, pairs, steps=12,
                                                   return_delta=True)
    assert both.shape == (3, 2, *SHAPE) and delta.shape == (3, 2)
    for j in range(2):
        one, d = attribution.integrated_gradients(apply_fn, params, x, pairs[:, j], steps=12,
                                                  return_delta=True)
        np.testing.assert_allclose(np.asarray(both[:, j]), np.asarray(one), rtol=1e-5,
                                   atol=1e-7)
        np.testing.assert_allclose(np.asarray(delta[:, j]), np.asarray(d), atol=1e-5)


def test_deletion_insertion_curves_in_one_call(rng, nets):
    apply_fn, params, _ = nets
    x = rng.random((2, *SHAPE), dtype=np.float32)
    targets = np.array([1, 3])
    maps = attribution.integrated_gradients(apply_fn, params, x, targets, steps=8)
    traces = []

    def curves(x, maps):
        traces.append(1)
        return attribution.deletion_insertion(apply_fn, params, x, targets, maps,
                                              fractions=jnp.linspace(0, 1, 5))

    out = jax.jit(curves)(x, maps)
    assert len(traces) == 1 and out["deletion"].shape == (2, 5)
    probs = lambda im: np.asarray(jax.nn.softmax(apply_fn(params, im), -1))[np.arange(2), targets]
    np.testing.assert_allclose(np.asarray(out["deletion"][:, 0]), probs(x), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out["deletion"][:, -1]), probs(np.zeros_like(x)),
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out["insertion"][:, -1]), probs(x), rtol=1e-5)
    # a plain loop over one fraction: delete the top half of the pixels by attribution
    score = np.asarray(maps).sum(-1).reshape(2, -1)
    for i in range(2):
        top = np.argsort(-score[i])[: int(round(0.5 * score.shape[1]))]
        edited = x[i].reshape(-1, 1).copy()
        edited[top] = 0.0
        p = np.asarray(jax.nn.softmax(apply_fn(params, edited.reshape(1, *SHAPE)), -1))[0]
        assert out["deletion"][i, 2] == pytest.approx(p[targets[i]], rel=1e-5)


def test_attribution_drift_over_levels(rng, nets):
    apply_fn, params, _ = nets
    x = (rng.integers(0, 256, (3, *SHAPE)) / 255).astype(np.float32)
    out = attribution.attribution_drift(jax.random.key(0), apply_fn, params, x, [0, 1, 2],
                                        corruption="noise", levels=[0.0, 0.05, 0.3])
    assert out["ssim"].shape == (3, 3) and out["rank_correlation"].shape == (3, 3)
    # level 0 leaves the image (and so its map) unchanged
    np.testing.assert_allclose(np.asarray(out["ssim"][0]), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["rank_correlation"][0]), 1.0, atol=1e-5)
    assert float(out["rank_correlation"][2].mean()) < float(out["rank_correlation"][1].mean())
    a = rng.random(50)
    b = a + 0.3 * rng.random(50)
    from scipy.stats import spearmanr

    assert float(attribution.checks._rank_correlation(jnp.asarray(a), jnp.asarray(b))) == \
        pytest.approx(spearmanr(a, b).statistic, abs=1e-5)


def test_streamed_attributions_equal_the_in_memory_ones_and_resume(tmp_path):
    from jaxrobust import models
    from jaxrobust.attribution import (
        attribution_drift,
        attribution_drift_source,
        integrated_gradients,
        integrated_gradients_source,
    )
    from jaxrobust.data.stream import ArraySource

    rng = np.random.default_rng(5)
    u8 = rng.integers(0, 256, (7, 16, 16, 1)).astype(np.uint8)
    x, y = (u8 / 255.0).astype(np.float32), np.arange(7) % 4
    fn, params = models.pure(models.get("small_cnn", num_classes=4, input_shape=(16, 16, 1),
                                        width=0.25, hidden=8, seed=3))
    kw = dict(steps=8, batch_size=3, log=lambda s: None)
    got = integrated_gradients_source(fn, params, ArraySource(u8, y), keep_maps=True,
                                      cells_dir=str(tmp_path / "ig"), **kw)
    maps, delta = integrated_gradients(fn, params, x, y, steps=8, return_delta=True)
    np.testing.assert_allclose(got["maps"], maps, atol=1e-6)
    np.testing.assert_allclose(got["delta"], delta, atol=1e-5)
    np.testing.assert_allclose(got["abs_sum"], np.abs(np.asarray(maps)).sum((1, 2, 3)),
                               rtol=1e-5)
    np.testing.assert_array_equal(got["target"], y)
    cells = sorted((tmp_path / "ig").rglob("*.npz"))
    stamps = [c.stat().st_mtime_ns for c in cells]
    again = integrated_gradients_source(fn, params, ArraySource(u8, y), keep_maps=True,
                                        cells_dir=str(tmp_path / "ig"), **kw)
    assert [c.stat().st_mtime_ns for c in cells] == stamps  # resumed, not recomputed
    np.testing.assert_array_equal(again["delta"], got["delta"])
    lean = integrated_gradients_source(fn, params, ArraySource(u8, y), targets="predicted",
                                       **kw)
    assert "maps" not in lean
    np.testing.assert_array_equal(lean["target"], np.argmax(fn(params, x), -1))
    key, levels = jax.random.key(4), [0.0, 0.1, 0.4]
    drift = attribution_drift_source(key, fn, params, ArraySource(u8, y),
                                     corruption="gaussian_noise", levels=levels,
                                     batch_size=2, log=lambda s: None)
    want = attribution_drift(key, fn, params, x, y, corruption="gaussian_noise", levels=levels)
    np.testing.assert_allclose(drift["ssim"], want["ssim"], atol=1e-6)
    np.testing.assert_allclose(drift["rank_correlation"], want["rank_correlation"], atol=1e-6)
    with pytest.raises(ValueError, match="targets must be"):
        integrated_gradients_source(fn, params, ArraySource(u8, y), targets="true", **kw)
