"""`protocol="study"` against a transcription of the corruption study's own loop.

The transcription follows `seeds/000_ed0e298662be814e.txt` ("Full Range of Test Images
Generation") with the libraries of its time: the float64 intensity loop,
`sk.util.crop` (skimage 0.16-0.18), whose float widths went through NumPy's
`_as_pairs(..., as_index=True)`, `cv2.resize` back to size, `skimage.filters.median`
with `disk(intensity / 0.05)`, `random_noise(img, var=sigma**2)`, and
`structural_similarity(..., multichannel=True)` on float64 images, whose range was
the float dtype's, 2.
"""

import jax
import numpy as np
import pytest
from conftest import random_image
from skimage.filters import median
from skimage.metrics import structural_similarity
from skimage.morphology import disk
from skimage.util import random_noise

from jaxrobust import corruptions, sweep

cv2 = pytest.importorskip("cv2")
try:  # NumPy 2; NumPy 1 kept it in numpy.lib.arraypad
    from numpy.lib._arraypad_impl import _as_pairs
except ImportError:  # pragma: no cover
    from numpy.lib.arraypad import _as_pairs

KEY = jax.random.key(0)


def study_loop():
    """The seed's loop, transcribed: (distortion, intensity) for every step, in order."""
    steps = []
    for distorsio in ["Crop", "Noise", "Blurr"]:
        intensity = -0.05
        RANG = 50
        if distorsio == "Blurr":
            RANG = 20
        for _proba in range(RANG):
            intensity = intensity + 0.05
            if distorsio == "Crop":
                intensity = intensity + 0.06
            steps.append((distorsio, intensity))
    return steps


def sk_util_crop(img, width):
    """skimage 0.17's `crop(ar, crop_width)`: widths through `_as_pairs(as_index=True)`."""
    crops = _as_pairs(((width, width), (width, width)), img.ndim, as_index=True)
    return img[tuple(slice(a, img.shape[i] - b) for i, (a, b) in enumerate(crops))]


def merge3(img):
    return cv2.merge((img, img, img))  # the study's cv2.merge to 3 channels


def _intensities(name):
    return [i for d, i in study_loop() if d == name]


def test_study_levels_are_the_loops_own():
    crop = corruptions.seed_levels("crop", protocol="study")
    assert crop.dtype == np.float64
    widths = [_as_pairs(4 * i, 1, as_index=True)[0][0] for i in _intensities("Crop")]
    np.testing.assert_array_equal(crop, widths)
    assert crop.astype(int).tolist()[:12] == [0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 5, 5]
    assert crop[-1] == 22
    blur = corruptions.seed_levels("blur", protocol="study")
    assert blur.tolist() == [i / 0.05 for i in _intensities("Blurr")]  # bit for bit
    assert blur[6] == 5.999999999999999 and blur[16] == 16.000000000000004
    noise = corruptions.seed_levels("noise", protocol="study")
    assert noise.tolist() == [i / 20.0 for i in _intensities("Noise")]
    # the continuous protocol is the schedule it always was
    np.testing.assert_allclose(corruptions.seed_levels("crop")[:2], [0.24, 0.68], rtol=1e-6)
    assert corruptions.seed_levels("blur").tolist() == list(range(20))
    with pytest.raises(ValueError, match="protocol must be one of"):
        corruptions.seed_levels("crop", protocol="seed")


@pytest.mark.parametrize("shape", [(174, 174), (61, 47)])
def test_study_crop_matches_the_loop(rng, shape):
    img = rng.random(shape)  # float64, as the study's imread(as_gray=True) gave
    size = shape[0]
    levels = corruptions.seed_levels("crop", image_size=size, protocol="study")
    scale = size / 174
    ours = jax.jit(jax.vmap(corruptions.scale_up, in_axes=(None, None, 0)))(
        KEY, img[..., None].astype(np.float32), corruptions.kernel_levels("crop", levels))
    for step, intensity in enumerate(_intensities("Crop")):
        im_crop = sk_util_crop(img, intensity * 4 * scale)
        ref = cv2.resize(im_crop, (shape[1], shape[0]))  # INTER_LINEAR, the default
        np.testing.assert_allclose(np.asarray(ours[step, ..., 0]), ref, atol=1e-4,
                                   err_msg=f"step {step}")


@pytest.mark.parametrize(("shape", "eight_bit"), [((174, 174), True), ((45, 39), False)])
def test_study_median_every_radius_bit_exact_with_the_footprint_traced(rng, shape, eight_bit):
    img = random_image(rng, shape + (1,), eight_bit=eight_bit)
    levels = corruptions.seed_levels("blur", protocol="study")
    encoded = corruptions.kernel_levels("blur", levels)
    fn = jax.jit(lambda x, footprint: corruptions.median_blur(KEY, x, footprint))
    for step, intensity in enumerate(_intensities("Blurr")):
        sel25 = disk(intensity / 0.05)
        ref = median(img[..., 0].astype(np.float64), sel25, mode="nearest")
        out = np.asarray(fn(img, encoded[step]))[..., 0]
        np.testing.assert_array_equal(out, ref, err_msg=f"step {step}, r={intensity / 0.05!r}")
    assert fn._cache_size() == 1  # one compiled program for every radius


def test_study_float_radius_given_as_a_python_float(rng):
    img = random_image(rng, (30, 27, 2), eight_bit=False)
    for r in (5.999999999999999, 16.000000000000004):
        ref = np.stack([median(img[..., c], disk(r), mode="nearest") for c in range(2)], -1)
        np.testing.assert_array_equal(np.asarray(corruptions.median_blur(KEY, img, r)), ref)
    assert disk(5.999999999999999).sum() == 111 and disk(16.000000000000004).shape == (34, 34)


def test_traced_float32_radii_match_disk_of_a_float32(rng):
    img = random_image(rng, (33, 29, 1), eight_bit=True)
    fn = jax.jit(lambda x, r: corruptions.median_blur(KEY, x, r))
    radii = np.concatenate([rng.uniform(0.6, 19.5, 4), [7.5, 2.5]]).astype(np.float32)
    for r in radii:
        ref = median(img[..., 0], disk(np.float32(r)), mode="nearest")
        np.testing.assert_array_equal(np.asarray(fn(img, r))[..., 0], ref, err_msg=repr(r))
    # the footprint rows themselves, for many float32 radii near whole and half values
    near = [np.float32(k / 2) + d * np.spacing(np.float32(max(k / 2, 1)))
            for k in range(2, 39) for d in (-2, -1, 1, 2)]
    rows = jax.jit(jax.vmap(corruptions.disk_footprint))(np.asarray(near, np.float32))
    for r, got in zip(near, np.asarray(rows), strict=True):
        np.testing.assert_array_equal(got, np.asarray(corruptions.disk_footprint(np.float32(r))),
                                      err_msg=repr(r))


def test_an_empty_disk_is_refused():
    img = np.zeros((9, 9, 1), np.float32)
    with pytest.raises(ValueError, match="is empty"):
        corruptions.median_blur(KEY, img, 0.4)
    traced = jax.jit(lambda r: corruptions.median_blur(KEY, img, r))(np.float32(0.4))
    assert np.isnan(np.asarray(traced)).all()


def test_study_noise_has_the_loops_distribution(rng):
    img = rng.random((174, 174))
    for sigma in [i / 20.0 for i in _intensities("Noise")][10::13]:
        ours = np.asarray(jax.vmap(corruptions.gaussian_noise, in_axes=(0, None, None))(
            jax.random.split(KEY, 4), img[..., None].astype(np.float32), sigma))[..., 0]
        ref = np.stack([random_noise(img, var=sigma**2, rng=i) for i in range(4)])
        for a, b in ((ours, ref), (ours < 1e-7, ref == 0), (ours > 1 - 1e-7, ref == 1)):
            assert abs(a.mean() - b.mean()) < 2e-3, sigma
        assert abs((ours - img).std() - (ref - img).std()) < 2e-3 * max(1.0, sigma * 10)


def _identity_classifier(num_classes=4, predict=0):
    """A classifier that always predicts class `predict`."""
    def apply_fn(params, x):
        return jax.numpy.broadcast_to(params, (x.shape[0], num_classes))
    return apply_fn, jax.numpy.eye(num_classes)[predict] * 5.0


@pytest.mark.parametrize("size", [174, 61])
def test_sweep_under_the_study_protocol_matches_the_loops_ssim(rng, size):
    # The study's SSIM: float64 3-channel images (cv2.merge), no data_range: 2.
    images = rng.random((2, size, size))
    classes = ["original", "scale_up", "median_blur", "gaussian_noise"]
    apply_fn, params = _identity_classifier()
    _, per = sweep.run(KEY, {"m": (apply_fn, params)}, images[..., None].astype(np.float32),
                       corruptions=("crop",), protocol="study",
                       class_names={"m": classes}, log=lambda s: None)
    for step, intensity in enumerate(_intensities("Crop")):
        for i, img in enumerate(images):
            im_crop = merge3(cv2.resize(sk_util_crop(img, intensity * 4 * size / 174),
                                        (size, size)))
            ref = structural_similarity(merge3(img), im_crop, channel_axis=-1, data_range=2)
            assert abs(per["scale_up/ssim"][step, i] - ref) < 1e-5, (step, i)


def test_limit_value_relabels_as_original_with_known_answers(rng):
    images = random_image(rng, (6, 24, 24, 1), eight_bit=True)
    classes = ["original", "scale_up", "median_blur", "gaussian_noise"]
    levels = {"gaussian_noise": [0.0, 0.02, 0.3]}
    run = dict(corruptions=("noise",), levels=levels, class_names={"m": classes},
               log=lambda s: None)
    says_original = _identity_classifier(predict=0)
    says_noise = _identity_classifier(predict=3)
    plain, per = sweep.run(KEY, {"m": says_original}, images, **run)
    assert (plain.accuracy == 0).all()  # without a limit, "original" is always wrong
    assert (plain.clean_accuracy == 1).all()  # ... and always right on clean images
    limit = float(np.median(per["gaussian_noise/ssim"][1]))
    for model, correct_if_above in ((says_original, True), (says_noise, False)):
        table, per = sweep.run(KEY, {"m": model}, images, limit_ssim=limit, **run)
        above = per["gaussian_noise/ssim"] > limit
        want = above.mean(1) if correct_if_above else 1 - above.mean(1)
        np.testing.assert_allclose(table.accuracy.to_numpy(), want)
        np.testing.assert_array_equal(per["gaussian_noise/m/expected"], np.where(above, 0, 3))
    assert above[0].all() and not above[2].any()  # identity step: SSIM 1, labelled original
    with pytest.raises(ValueError, match="no class 'original'"):
        sweep.run(KEY, {"m": says_original}, images, limit_ssim=0.5,
                  **{**run, "class_names": {"m": ["a", "b", "c", "gaussian_noise"]}})


def test_ssim_range_follows_the_protocol(rng):
    images = random_image(rng, (2, 20, 20, 1), eight_bit=False)
    classes = ["original", "scale_up", "median_blur", "gaussian_noise"]
    run = dict(corruptions=("noise",), levels={"gaussian_noise": [0.1]},
               class_names={"m": classes}, log=lambda s: None)
    clf = {"m": _identity_classifier()}
    _, one = sweep.run(KEY, clf, images, **run)
    _, two = sweep.run(KEY, clf, images, protocol="study", **run)
    _, two_explicit = sweep.run(KEY, clf, images, ssim_data_range=2.0, **run)
    np.testing.assert_array_equal(two["gaussian_noise/ssim"], two_explicit["gaussian_noise/ssim"])
    assert (two["gaussian_noise/ssim"] > one["gaussian_noise/ssim"]).all()


def test_summaries_take_the_clean_accuracy_not_step_0():
    import pandas as pd

    from jaxrobust import metrics
    from jaxrobust.studies import corruption

    # corruption_type: step 0 is the identity, where nobody can see the corruption
    acc = {"a": [0.0, 0.2, 0.6, 0.9], "b": [0.0, 0.1, 0.3, 0.5]}
    ssim = [1.0, 0.9, 0.7, 0.4]
    clean = {"a": 0.8, "b": 0.9}
    table = pd.DataFrame([{"model": m, "corruption": "c", "step": s, "level": float(s),
                           "accuracy": acc[m][s], "ssim_mean": ssim[s],
                           "clean_accuracy": clean[m]} for m in acc for s in range(4)])
    per = {"c/ssim": np.ones((4, 2)), **{f"c/{m}/correct": np.ones((4, 2), bool) for m in acc}}
    summary, _ = corruption.summarize(table, per, target="corruption_type", fraction=0.5)
    # a reaches 0.5 x 0.8 = 0.4 at level 2; interpolated SSIM between 0.9 (0.2) and 0.7 (0.6)
    assert summary["a"]["c"]["critical_level"] == 2.0
    assert summary["a"]["c"]["critical_ssim"] == pytest.approx(0.8)
    assert summary["b"]["c"]["critical_level"] == 3.0  # 0.3 < 0.45 at level 2, 0.5 at 3
    assert summary["b"]["c"]["critical_level"] != 0.0
    assert summary["a"]["c"]["relative_auc"] == pytest.approx(
        metrics.area_under_curve(range(4), acc["a"]) / 0.8)
    errors = summary["a"]["corruption_error_vs_b"]
    assert errors["mCE"] == pytest.approx((1 - np.array(acc["a"])).sum()
                                          / (1 - np.array(acc["b"])).sum())
    rel = ((1 - np.array(acc["a"])) - 0.2).sum() / ((1 - np.array(acc["b"])) - 0.1).sum()
    assert errors["relative_mCE"] == pytest.approx(rel)
    assert summary["b"]["corruption_error_vs_b"]["relative_mCE"] == 1.0
    assert summary["b"]["corruption_error_vs_b"]["mCE"] == 1.0
    # labels: accuracy falls; never below half of clean -> said in words
    assert metrics.critical_level([0, 1], [0.9, 0.8], clean=0.9).startswith("none:")
    assert metrics.critical_level([0, 1], [0.9, 0.3], clean=0.9) == 1.0
    assert metrics.critical_ssim([1.0, 0.5], [0.9, 0.3], clean=0.9) == pytest.approx(
        1.0 - 0.5 * (0.9 - 0.45) / 0.6)
    # undefined summaries are words, never numbers
    nan = float("nan")
    assert metrics.critical_level([0, 1], [0.9, 0.3], clean=nan).startswith("undefined")
    assert metrics.relative_auc([0, 1], [0.5, 0.5], clean=0.0).startswith("undefined")
    flat = pd.DataFrame([{"model": m, "corruption": "c", "step": s, "accuracy": 0.9}
                         for m in "xy" for s in range(2)])
    out = metrics.corruption_errors(flat, baseline="y", clean_accuracy={"x": 0.9, "y": 0.9})
    assert out["x"]["relative_mCE"].startswith("undefined")
    assert out["y"]["mCE"] == 1.0


def test_study_loading_matches_imread_and_cv2_resize(tmp_path, rng):
    from skimage import io

    from jaxrobust.data import sources

    gray = rng.integers(0, 256, (90, 70), dtype=np.uint8)
    rgb = rng.integers(0, 256, (50, 80, 3), dtype=np.uint8)
    io.imsave(tmp_path / "BPD_1.png", gray, check_contrast=False)
    io.imsave(tmp_path / "CLR_2.png", rgb, check_contrast=False)
    ds = sources.load(f"folder:{tmp_path}", image_size=41, protocol="study", log=lambda s: None)
    refs = [cv2.resize(gray / 255.0, (41, 41)),
            cv2.resize(io.imread(tmp_path / "CLR_2.png", as_gray=True), (41, 41))]
    for img, ref in zip(ds.images[..., 0], refs, strict=True):
        np.testing.assert_allclose(img, ref, atol=2e-6)
    assert len(np.unique(ds.images)) > 256  # no 8-bit re-quantisation


def test_the_main_job_runs_the_study_protocol_and_names_it(tmp_path):
    import json

    from jaxrobust import cli

    small = ["--set", "data.n_images=12", "--set", "data.image_size=24", "--set",
             "train.epochs=1", "--set", "models=[{name: small_cnn, width: 0.25, hidden: 8}]"]
    out = tmp_path / "run"
    assert cli.main(["run", *small, "--set", "sweep.protocol=study", "--set",
                     "sweep.limit_ssim=0.95", "--out", str(out), "-q"]) == 0
    html = (out / "report.html").read_text()
    assert "Protocol: study" in html and "critical SSIM" in html
    summary = json.loads((out / "summary.json").read_text())
    assert summary["_protocol"].startswith("Protocol: study")
    assert "SSIM data range 2" in summary["_protocol"]
