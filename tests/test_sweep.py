"""The sweep engine against a plain per-level loop, chunking, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
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

    program = shard_batch(lambda p, i, x, e, lv: (jax.vmap(lambda im: im.sum() * lv.sum())(x),),
                          in_axes=(None, 0, 0, 0, None))
    lv = jnp.asarray(levels["median_blur"])
    exp = np.zeros((5, 1), np.int32)
    small = sweep.auto_batch_size(program, params, images, exp, lv, devices=1, n=600,
                                  budget_bytes=1e4)
    big = sweep.auto_batch_size(program, params, images, exp, lv, devices=1, n=600,
                                budget_bytes=1e9)
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


class _Source:
    """A lazy source of uint8 images (as files or tfds give them) that counts its reads."""

    def __init__(self, images, labels):
        self.images, self.labels, self.reads = images, labels, []

    def __len__(self):
        return len(self.images)

    def __getitem__(self, idx):
        self.reads.append(np.asarray(idx).tolist())
        return self.images[idx], self.labels[idx]


def test_a_streamed_uint8_source_equals_the_array_and_reads_chunks(setup, tmp_path):
    images, apply_fn, params, levels = setup
    u8 = np.round(images * 255).astype(np.uint8)
    source = _Source(u8, np.arange(5) % 4)
    kw = dict(levels=levels, class_names={"m": CLASSES}, batch_size=2, log=lambda s: None)
    table, per = sweep.run(jax.random.key(1), {"m": (apply_fn, params)}, source, **kw)
    want, want_per = _run(setup, batch_size=2)
    pd.testing.assert_frame_equal(table, want)
    for k in want_per:  # floats to rounding: the suite's XLA flags (conftest) may round
        # a program that converts uint8 on the device apart from one given floats;
        # test_resume.py::test_four_devices_equal_one checks bits as users compile
        if np.issubdtype(want_per[k].dtype, np.floating):
            np.testing.assert_allclose(per[k], want_per[k], rtol=1e-5, atol=1e-7, err_msg=k)
        else:
            np.testing.assert_array_equal(per[k], want_per[k], err_msg=k)
    # after the first read (the check / memory probe, at most 8 images per device), one
    # chunk (2 images per device, or per core on one CPU device) at a time
    from jaxrobust.sharding import workers

    assert len(source.reads[0]) <= 8 * workers()
    assert max(len(r) for r in source.reads[1:]) <= 2 * workers()
    # a numpy.memmap and an element-wise source (tfds' data_source, grain) sweep alike
    from jaxrobust.data import stream

    items = [{"image": im, "label": int(la)} for im, la in zip(u8, np.arange(5) % 4,
                                                                strict=True)]
    table2, _ = sweep.run(jax.random.key(1), {"m": (apply_fn, params)},
                          stream.ElementSource(items), **kw)
    pd.testing.assert_frame_equal(table2, want)
    mm = np.lib.format.open_memmap(tmp_path / "images.npy", "w+", np.uint8, u8.shape)
    mm[:] = u8
    mm.flush()
    table3, _ = sweep.run(jax.random.key(1), {"m": (apply_fn, params)},
                          np.load(tmp_path / "images.npy", mmap_mode="r"), np.arange(5) % 4,
                          cells_dir=str(tmp_path / "cells"), **kw)
    pd.testing.assert_frame_equal(table3, want)


def test_records_are_reduced_on_device_and_match_the_probabilities(setup):
    images, apply_fn, params, levels = setup
    net = models.get("small_cnn", num_classes=7, input_shape=(20, 20, 1), width=0.25, hidden=8)
    fn, p = models.pure(net)
    labels = np.array([0, 6, 3, 2, 5])
    table, per = sweep.run(jax.random.key(3), {"m": (fn, p)}, images, labels,
                           corruptions=("gaussian_noise",), levels=levels, target="labels",
                           keep_probs=True, batch_size=2, log=lambda s: None)
    assert {"top5_accuracy", "true_prob", "loss"} <= set(table.columns)
    probs = per["gaussian_noise/m/probs"]  # (L, N, K), kept on request
    true = np.take_along_axis(probs, np.broadcast_to(labels, probs.shape[:2])[..., None],
                              -1)[..., 0]
    np.testing.assert_array_equal(per["gaussian_noise/m/pred"], probs.argmax(-1))
    np.testing.assert_allclose(per["gaussian_noise/m/true_prob"], true, rtol=1e-5)
    np.testing.assert_allclose(per["gaussian_noise/m/loss"], -np.log(true), rtol=1e-4)
    np.testing.assert_allclose(per["gaussian_noise/m/confidence"], probs.max(-1), rtol=1e-5)
    rank = (probs > true[..., None]).sum(-1)
    np.testing.assert_array_equal(per["gaussian_noise/m/top5"], rank < 5)
    np.testing.assert_allclose(table.top5_accuracy, (rank < 5).mean(1))
    _, lean = sweep.run(jax.random.key(3), {"m": (fn, p)}, images, labels,
                        corruptions=("gaussian_noise",), levels=levels, target="labels",
                        batch_size=2, log=lambda s: None)
    assert "gaussian_noise/m/probs" not in lean  # never the full vector by default


def test_bad_sources_fail_with_one_clear_error_before_any_compute(setup):
    images, apply_fn, params, levels = setup
    clf = {"m": (apply_fn, params)}
    kw = dict(corruptions=("gaussian_noise",), levels=levels, target="labels", batch_size=2,
              log=lambda s: None)
    u8 = np.round(images * 255).astype(np.uint8)

    class Wrong(_Source):
        def __getitem__(self, idx):
            x, y = super().__getitem__(idx)
            return self.bad(x, y)

    cases = [(lambda x, y: (x[..., 0], y), "returned images of shape"),
             (lambda x, y: (x.astype(np.int64), y), "dtype int64"),
             (lambda x, y: (x / 1.0, y), "outside \\[0, 1\\]"),
             (lambda x, y: (x, y + 10), "labels out of range \\[0, 4\\)"),
             (lambda x, y: (x, y.astype(float)), "integer labels")]
    for bad, match in cases:
        source = Wrong(u8, np.arange(5) % 4)
        source.bad = bad
        with pytest.raises(ValueError, match=match):
            sweep.run(jax.random.key(0), clf, source, **kw)
    with pytest.raises(ValueError, match="returns its own labels"):
        sweep.run(jax.random.key(0), clf, _Source(u8, np.arange(5)), np.arange(5), **kw)


def test_a_grain_dataset_sweeps_as_the_array(setup):
    grain = pytest.importorskip("grain", reason="grain is not installed (pip install grain)")
    from jaxrobust.data import stream

    images, apply_fn, params, levels = setup
    u8 = np.round(images * 255).astype(np.uint8)
    ds = grain.MapDataset.source(list(range(5))).map(
        lambda i: {"image": u8[i], "label": i % 4})  # a lazy grain pipeline
    kw = dict(corruptions=("gaussian_noise",), levels=levels, class_names={"m": CLASSES},
              batch_size=2, log=lambda s: None)
    got, _ = sweep.run(jax.random.key(1), {"m": (apply_fn, params)}, stream.ElementSource(ds),
                       **kw)
    want, _ = sweep.run(jax.random.key(1), {"m": (apply_fn, params)}, images,
                        np.arange(5) % 4, **kw)
    # floats to float32 rounding (the suite's XLA flags may round a program that converts
    # uint8 on the device apart from one given floats: see the test above)
    pd.testing.assert_frame_equal(got, want, rtol=1e-5, atol=1e-6)


def test_coinciding_levels_of_a_deterministic_kernel_are_computed_once(setup):
    images, apply_fn, params, _ = setup
    spec = jax.ShapeDtypeStruct(images.shape[1:], jnp.float32)
    crops = np.array([2.0, 0.0, 2.0, 1.0, 0.0])
    kept, inverse = sweep._distinct_levels(corruptions.get("scale_up").apply, spec, crops)
    np.testing.assert_array_equal(kept, [2.0, 0.0, 1.0])
    np.testing.assert_array_equal(inverse, [0, 1, 0, 2, 1])
    # a random kernel draws anew at every step: nothing is shared
    sigmas = np.array([0.1, 0.1])
    assert sweep._distinct_levels(corruptions.get("gaussian_noise").apply, spec,
                                  sigmas)[1] is None

    def sweep_levels(levels):
        return sweep.run(jax.random.key(1), {"m": (apply_fn, params)}, images,
                         np.arange(5) % 4, corruptions=tuple(levels), levels=levels,
                         class_names={"m": CLASSES}, batch_size=2, log=lambda s: None)[1]

    both = sweep_levels({"scale_up": crops, "gaussian_noise": sigmas})
    apart = sweep_levels({"scale_up": kept})
    for field in ("ssim", "m/pred", "m/loss", "m/confidence"):
        np.testing.assert_array_equal(both[f"scale_up/{field}"],
                                      apart[f"scale_up/{field}"][inverse])
    assert not np.array_equal(both["gaussian_noise/ssim"][0], both["gaussian_noise/ssim"][1])


def _counted(apply_fn):
    """`apply_fn` that also counts the images it is run on (a host callback: only the
    model passes that run are counted, not those a `lax.cond` skips)."""
    seen = []

    def fn(params, x):
        jax.debug.callback(lambda n: seen.append(int(n)), x.shape[0])
        return apply_fn(params, x)

    return fn, seen


def test_identity_levels_reuse_the_clean_pass_and_give_its_records(setup, monkeypatch):
    # level 0 of the crop, the median and the noise returns the image unchanged, bit
    # for bit: the sweep takes the clean pass's logits there, so sweeping it costs no
    # model pass, and its records are the model's on the clean images
    images, apply_fn, params, levels = setup
    labels = np.arange(5) % 4

    def images_seen(levels, **kw):
        fn, seen = _counted(apply_fn)
        _, per = sweep.run(jax.random.key(1), {"m": (fn, params)}, images, labels,
                           levels=levels, class_names={"m": CLASSES}, batch_size=2,
                           log=lambda s: None, **kw)
        jax.effects_barrier()
        return sum(seen), per

    with_zero, per = images_seen(levels)
    without_zero, _ = images_seen({k: v[1:] for k, v in levels.items()})
    assert with_zero == without_zero
    logits = np.asarray(apply_fn(params, jnp.asarray(images)))
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    for name in levels:
        np.testing.assert_array_equal(per[f"{name}/m/pred"][0], logits.argmax(-1))
        np.testing.assert_allclose(per[f"{name}/m/confidence"][0], probs.max(-1), rtol=1e-5)
        np.testing.assert_allclose(per[f"{name}/ssim"][0], 1.0, atol=1e-6)
    # kept only while the clean logits fit the budget: beyond it, only the first
    # corruption (which runs the clean pass anyway) reuses them; same records
    monkeypatch.setattr(sweep, "CLEAN_LOGITS_BYTES", 0)
    over_budget, per_over = images_seen(levels)
    assert over_budget > with_zero
    for name in levels:
        np.testing.assert_array_equal(per_over[f"{name}/m/pred"], per[f"{name}/m/pred"])
        np.testing.assert_allclose(per_over[f"{name}/m/loss"], per[f"{name}/m/loss"],
                                   rtol=1e-5, atol=1e-6)


def test_an_identity_level_that_changes_pixels_runs_the_models(setup):
    # contrast at its identity level 1 rounds some pixels (mean + (x - mean) * 1):
    # the check finds them changed and the models run there as at any level
    images, apply_fn, params, _ = setup
    rgb = np.repeat(images, 3, -1)
    net = models.get("small_cnn", num_classes=4, input_shape=rgb.shape[1:], width=0.25,
                     hidden=8)
    rgb_fn, rgb_params = models.pure(net)
    bad = corruptions.get("contrast").apply(jax.random.key(0), jnp.asarray(rgb[0]), 1.0)
    assert not np.array_equal(np.asarray(bad), rgb[0])

    def images_seen(levels):
        fn, seen = _counted(rgb_fn)
        sweep.run(jax.random.key(1), {"m": (fn, rgb_params)}, rgb, np.arange(5) % 4,
                  corruptions=("contrast",), levels={"contrast": np.array(levels)},
                  target="labels", batch_size=2, log=lambda s: None)
        jax.effects_barrier()
        return sum(seen)

    assert images_seen([1.0, 0.5]) == images_seen([0.3, 0.5]) > images_seen([0.5])


def test_unchanged_compares_bits():
    a = jnp.array([0.0, 1.0, 2.0])
    assert bool(sweep._unchanged(a, a))
    assert not bool(sweep._unchanged(a, jnp.array([-0.0, 1.0, 2.0])))  # == but not the bits
    assert not bool(sweep._unchanged(a, a.astype(jnp.float16)))
    assert not bool(sweep._unchanged(a, a[:2]))
