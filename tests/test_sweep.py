"""The sweep engine against a plain per-level loop, chunking, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import corruptions, models, store, sweep
from jaxrobust.metrics import area_under_curve, bootstrap_interval, critical_level, ssim

CLASSES = ["original", "scale_up", "median_blur", "gaussian_noise"]


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    images = (rng.integers(0, 256, (5, 20, 20, 1)) / 255).astype(np.float32)
    net = models.get("small_cnn", num_classes=4, input_shape=(20, 20, 1), width=0.25, hidden=8)
    apply_fn, params = models.pure(net)
    levels = {"scale_up": np.array([0.0, 1.5, 4.0], np.float32),
              "median_blur": np.array([0.0, 2.0, 5.0], np.float32),
              "gaussian_noise": np.array([0.0, 0.05, 0.2], np.float32)}
    return images, apply_fn, params, levels


def _run(setup, **kw):
    images, apply_fn, params, levels = setup
    kw.setdefault("batch_size", 64)
    return sweep.run(jax.random.key(1), {"m": (apply_fn, params)}, images, np.arange(5) % 4,
                     levels=levels, class_names={"m": CLASSES},
                     log=lambda s: None, **kw)


def test_results_do_not_depend_on_batch_size(setup):
    a, pa = _run(setup, batch_size=2)
    b, pb = _run(setup, batch_size=64)
    cols = ["accuracy", "ssim_mean", "ssim_std", "confidence", "loss"]
    np.testing.assert_allclose(a[cols].to_numpy(), b[cols].to_numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pa["median_blur/m/pred"], pb["median_blur/m/pred"])


def test_a_second_sweep_reuses_the_compiled_programs(setup):
    # the chunk program is built once per (kernel, models, mesh): another key, other
    # images or another chunk size must not trace and compile it again
    images, apply_fn, params, levels = setup
    one = ("gaussian_noise",)
    _run(setup, corruptions=one, batch_size=2)
    before = sweep._chunk_program.cache_info()
    table, _ = sweep.run(jax.random.key(7), {"m": (apply_fn, params)}, images[::-1],
                         np.arange(5) % 4, corruptions=one, levels=levels,
                         class_names={"m": CLASSES}, batch_size=3, log=lambda s: None)
    after = sweep._chunk_program.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 1
    assert len(table) == len(levels["gaussian_noise"])


def test_per_level_accuracy_equals_a_plain_loop(setup):
    images, apply_fn, params, levels = setup
    table, _ = _run(setup, batch_size=3)
    key = jax.random.key(1)
    for c, name in enumerate(corruptions.names("study")):
        kernel = corruptions.get(name).apply
        for step, level in enumerate(levels[name]):
            preds, scores = [], []
            for i, image in enumerate(images):
                k = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, c), i), step)
                bad = kernel(k, image, float(level))
                scores.append(float(ssim(image, bad)))
                preds.append(int(jnp.argmax(apply_fn(params, bad[None])[0])))
            row = table[(table.corruption == name) & (table.step == step)].iloc[0]
            assert row.accuracy == pytest.approx(np.mean(np.array(preds) == CLASSES.index(name)))
            assert row.ssim_mean == pytest.approx(np.mean(scores), abs=1e-5)
            assert row.level == pytest.approx(level)


def test_labels_target_and_outputs(setup, tmp_path):
    table, per = _run(setup, target="labels")
    store.write_results(str(tmp_path), table, per)
    assert (tmp_path / "results.csv").exists() and (tmp_path / "per_image.npz").exists()
    assert set(np.load(tmp_path / "per_image.npz").files) == set(per)
    assert len(table) == 9 and set(table.columns) >= {"model", "corruption", "step", "level",
                                                      "n", "accuracy", "ssim_mean"}
    assert set(table.clean_accuracy) == {np.mean(per["clean/m/pred"] == np.arange(5) % 4)}


def test_bad_input(setup):
    images, apply_fn, params, levels = setup
    clf = {"m": (apply_fn, params)}
    key, kw = jax.random.key(0), dict(class_names={"m": CLASSES}, log=lambda s: None)
    with pytest.raises(ValueError, match="unknown corruption"):
        sweep.run(key, clf, images, corruptions=("hail",), **kw)
    with pytest.raises(ValueError, match="levels for median_blur"):
        sweep.run(key, clf, images, corruptions=("blur",), levels={"median_blur": [0, 40]},
                  **kw)
    with pytest.raises(ValueError, match="one label per image"):
        sweep.run(key, clf, images, np.zeros(3), **kw)
    with pytest.raises(ValueError, match="has no class"):
        sweep.run(jax.random.key(0), clf, images, corruptions=("blur",),
                  class_names={"m": ["cat", "dog"]}, log=lambda s: None)


def test_summaries():
    levels = np.array([0, 1, 2, 3.0])
    acc = np.array([1.0, 0.8, 0.4, 0.2])
    assert area_under_curve(levels, acc) == pytest.approx((0.9 + 0.6 + 0.3) / 3)
    assert critical_level(levels, acc, clean=1.0) == 2.0
    correct = np.array([[1, 1, 1, 1], [0, 1, 0, 1]], bool)
    lo, hi = bootstrap_interval(correct, samples=200)
    assert lo[0] == hi[0] == 1.0 and 0.0 <= lo[1] <= 0.5 <= hi[1] <= 1.0


def test_a_sweep_folder_refuses_another_configuration(setup, tmp_path):
    first, _ = _run(setup, batch_size=2, cells_dir=str(tmp_path))
    again, _ = _run(setup, batch_size=2, cells_dir=str(tmp_path))  # all cells reused
    assert first.equals(again)
    images, apply_fn, params, levels = setup
    with pytest.raises(ValueError, match="other key; refusing to mix"):
        sweep.run(jax.random.key(2), {"m": (apply_fn, params)}, images, np.arange(5) % 4,
                  levels=levels, class_names={"m": CLASSES}, batch_size=2,
                  cells_dir=str(tmp_path), log=lambda s: None)
    with pytest.raises(ValueError, match="other images, models"):
        sweep.run(jax.random.key(1), {"m": (apply_fn, jax.tree.map(lambda p: p + 1, params))},
                  images[::-1], np.arange(5) % 4, levels=levels,
                  class_names={"m": CLASSES}, batch_size=2, cells_dir=str(tmp_path),
                  log=lambda s: None)
    with pytest.raises(ValueError, match="batch_size 2"):
        _run(setup, batch_size=3, cells_dir=str(tmp_path))


def test_automatic_chunk_size_fits_the_budget(setup):
    images, apply_fn, params, levels = setup
    one = ("gaussian_noise",)
    table, _ = _run(setup, batch_size=None, corruptions=one)  # chosen from the free memory
    reference, _ = _run(setup, batch_size=2, corruptions=one)
    assert table.equals(reference)
    from jaxrobust.sharding import shard_batch

    program = shard_batch(lambda p, i, x, lv: (jax.vmap(lambda im: im.sum() * lv.sum())(x),),
                          in_axes=(None, 0, 0, None))
    lv = jnp.asarray(levels["median_blur"])
    small = sweep.auto_batch_size(program, params, images, lv, devices=1, budget_bytes=1e4)
    big = sweep.auto_batch_size(program, params, np.resize(images, (600,) + images.shape[1:]),
                                lv, devices=1, budget_bytes=1e9)
    assert 1 <= small < big <= 512


def test_suite_corruptions_sweep_on_their_default_severities(setup):
    # any registered corruption sweeps (here on labels): default levels are severities
    # 0 .. 5, contrast's identity is 1, and a level outside the range is refused
    images, apply_fn, params, _ = setup
    clf = {"m": (apply_fn, params)}
    table, per_image = sweep.run(jax.random.key(2), clf, images, np.arange(5) % 4,
                                 corruptions=("fog", "contrast"), target="labels",
                                 log=lambda s: None)
    assert set(table["corruption"]) == {"fog", "contrast"}
    assert len(table) == 2 * 21
    first = table[table["step"] == 0]
    np.testing.assert_allclose(first["ssim_mean"], 1.0, atol=1e-6)  # severity 0: clean
    assert table[table["corruption"] == "fog"]["ssim_mean"].iloc[-1] < 0.9
    with pytest.raises(ValueError, match="levels for contrast"):
        sweep.run(jax.random.key(0), clf, images, np.arange(5) % 4, corruptions=("contrast",),
                  levels={"contrast": [1.0, 11.0]}, target="labels",
                  log=lambda s: None)
