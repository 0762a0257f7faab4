"""The benchmark tables (`table=`: ImageNet-C, CIFAR-10-C, Tiny-ImageNet-C, ImageNet
64x64-C) against transcriptions of their generators (`tests/hendrycks_c.py`): the
deterministic corruptions value for value at every severity, the random ones by
distribution, on fresh images of each benchmark's size."""

import functools
import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxrobust import corruptions
from jaxrobust.corruptions import tables
from tests import hendrycks_c as ref

#: Image side per table: the benchmark's own (ImageNet-C's 224 would be slow; its
#: pixel parameters are tested unscaled at 48 px, as `tests/test_suite.py` does).
SIDE = {"imagenet": 48, "cifar10": 32, "tinyimagenet": 64, "imagenet64": 64}


def _picture(rng, side):
    noise = rng.random((side, side, 3))
    smooth = ndimage.gaussian_filter(noise, (2, 2, 0))
    smooth = (smooth - smooth.min()) / (np.ptp(smooth) + 1e-9)
    edges = (rng.random(smooth.shape) < 0.03) * rng.random(smooth.shape)
    return np.round(np.clip(smooth + edges, 0, 1) * 255).astype(np.uint8)


def _options(table):
    # ImageNet-C's pixel values unscaled on the small test image
    return {"reference_size": None} if table == "imagenet" else {}


@functools.cache
def _kernel(name, table):
    c = corruptions.get(name, table=table)
    kw = _options(table) if "reference_size" in inspect.signature(c.apply).parameters else {}
    return jax.jit(jax.vmap(lambda k, x, lv: c.apply(k, x, lv, **kw), in_axes=(0, None, 0)))


def _levels(name, table):
    return jnp.asarray(corruptions.severity(name, [1, 2, 3, 4, 5], table=table))


@pytest.mark.parametrize("table", ref.TABLES)
@pytest.mark.parametrize("name", list(ref.DETERMINISTIC))
def test_deterministic_corruptions_equal_the_generators(rng, table, name):
    u8 = _picture(rng, SIDE[table])
    out = np.asarray(_kernel(name, table)(jax.random.split(jax.random.key(0), 5),
                                          jnp.asarray(u8 / 255.0, jnp.float32),
                                          _levels(name, table))) * 255.0
    for s in range(1, 6):
        want = ref.DETERMINISTIC[name](u8, s, table)
        got = out[s - 1]
        np.testing.assert_allclose(got / 255.0, want / 255.0, atol=1e-4,
                                   err_msg=f"{name} {table} severity {s}")


def test_severities_are_the_generators_levels():
    for table in ref.TABLES:
        for name, values in ref.C[table].items():
            if name in tables.LEVELS and table in tables.LEVELS[name]:
                want = [1 / v for v in values] if name == "shot_noise" else values
                np.testing.assert_allclose(corruptions.severity(name, [1, 2, 3, 4, 5],
                                                                table=table), want,
                                           rtol=1e-6, err_msg=f"{name} {table}")
            elif name == "zoom_blur":
                rows, _ = corruptions.blur.zoom_table(table)
                for (largest, step), zooms in zip(rows, values, strict=True):
                    np.testing.assert_allclose(1 + step * np.arange(len(zooms)), zooms)
                    np.testing.assert_allclose(largest, zooms[-1])
            else:
                np.testing.assert_allclose(np.asarray(tables.rows(name, table), float),
                                           np.asarray(values, float),
                                           err_msg=f"{name} {table}")
    # pixel levels scale from the benchmark's own image side
    np.testing.assert_allclose(corruptions.severity("gaussian_blur", 5, table="cifar10",
                                                    image_size=64), 2.0)
    np.testing.assert_allclose(corruptions.severity("gaussian_blur", 5, table="cifar10"), 1.0)
    # the small tables' elastic takes the severity; ImageNet-C's the gain
    assert corruptions.get("elastic", table="cifar10").max_level(32, 32) == 5.0
    assert corruptions.get("elastic").severities[0] == 12.5
    # corruptions outside the benchmarks keep their own
    assert corruptions.get("median_blur", table="cifar10") is corruptions.get("median_blur")
    assert corruptions.get("fog", table="cifar10") is corruptions.get("fog", table="cifar10")
    with pytest.raises(ValueError, match="unknown corruption table 'cifar100'"):
        corruptions.get("fog", table="cifar100")


def test_frost_weights_are_the_tables():
    # frost = a x + b layer: two flat images recover (a, b) exactly per severity
    for table in ("cifar10", "tinyimagenet"):
        kernel = _kernel("frost", table)
        keys = jnp.stack([jax.random.key(3)] * 5)
        levels = _levels("frost", table)
        zero = np.asarray(kernel(keys, jnp.zeros((32, 32, 3)), levels))
        half = np.asarray(kernel(keys, jnp.full((32, 32, 3), 0.25), levels))
        inside = (half < 1) & (zero < 1)
        for s, (a, b) in enumerate(ref.C[table]["frost"]):
            got_a = (half[s] - zero[s])[inside[s]] / 0.25
            np.testing.assert_allclose(got_a, a, atol=1e-4)
            assert zero[s].max() > 0 and b > 0


def _stats(images):
    a = np.asarray(images) / 255.0
    return {"mean": a.mean(), "std": a.std(), "zeros": (a <= 0.5 / 255).mean(),
            "ones": (a >= 254.5 / 255).mean()}


#: mean / std, clipped fractions, mean absolute change (relative)
_TOL = {"glass_blur": (0.012, 0.03, 0.25), "snow": (0.03, 0.07, 0.15),
        "fog": (0.06, 0.03, 0.25), "elastic_transform": (0.01, 0.03, 0.2)}


@pytest.mark.parametrize("table", ["cifar10", "tinyimagenet"])
@pytest.mark.parametrize("name", list(ref.RANDOM))
def test_random_corruptions_match_the_generators_distribution(rng, table, name):
    from benchmarks import reference

    try:
        ic = reference.load()
    except ImportError:  # pragma: no cover - the compare extra is not installed
        pytest.skip("imagecorruptions is not installed")
    helpers = {"motion": ic.corruptions._motion_blur, "plasma": ic.corruptions.plasma_fractal}
    fn = ref.RANDOM[name]
    extra = {k: v for k, v in helpers.items() if k in fn.__code__.co_varnames}
    u8 = _picture(rng, SIDE[table])
    count = 16 if name == "fog" else 6  # a fog image's mean varies with its plasma's
    np.random.seed(int(rng.integers(1 << 31)))  # noqa: NPY002 - plasma's global state
    abs_tol, clip_tol, rel_tol = _TOL.get(name, (0.01, 0.03, 0.1))
    for s in (1, 3, 5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = np.array([fn(u8, s, table, rng, **extra) for _ in range(count)])
        keys = jax.random.split(jax.random.key(int(rng.integers(1 << 30))), count)
        level = float(corruptions.severity(name, s, table=table))
        got = np.asarray(_kernel(name, table)(keys, jnp.asarray(u8 / 255.0, jnp.float32),
                                               jnp.full((count,), level))) * 255.0
        r, o = _stats(want), _stats(got)
        for k in r:
            tol = abs_tol if k in ("mean", "std") else clip_tol
            assert abs(r[k] - o[k]) <= tol, (name, table, s, k, r[k], o[k])
        change_r, change_o = np.abs(want - u8).mean(), np.abs(got - u8).mean()
        assert abs(change_o - change_r) <= rel_tol * change_r + 0.5, (name, table, s,
                                                                     change_r, change_o)


def test_small_elastic_affine_warp_equals_opencv(rng):
    # the first half of the small generators' elastic: cv2.warpAffine, exactly up to
    # OpenCV's 1/32-pixel coordinate rounding
    import cv2

    from jaxrobust.corruptions import _ops, digital

    image = (_picture(rng, 32) / 255.0).astype(np.float32)
    src = digital._affine_points(32, 32)
    dst = src + rng.uniform(-3, 3, src.shape).astype(np.float32)
    want = cv2.warpAffine(image, cv2.getAffineTransform(src, dst), (32, 32),
                          borderMode=cv2.BORDER_REFLECT_101)
    m = np.linalg.solve(np.concatenate([src, np.ones((3, 1))], 1), dst).T
    inv = np.linalg.inv(m[:, :2])
    rows, cols = np.meshgrid(np.arange(32.0), np.arange(32.0), indexing="ij")
    sx, sy = np.einsum("ij,jhw->ihw", inv, np.stack([cols - m[0, 2], rows - m[1, 2]]))
    got = np.asarray(_ops.bilinear_sample(jnp.asarray(image), jnp.asarray(sy, jnp.float32),
                                          jnp.asarray(sx, jnp.float32), "mirror"))
    assert np.abs(got - want).mean() < 2e-3 and np.abs(got - want).max() < 0.05


def test_alexnet_mce_equals_a_hand_computation(rng):
    import pandas as pd

    from jaxrobust import metrics

    # AlexNet's published ImageNet-C errors (Hendrycks & Dietterich 2019; AugMix's
    # ALEXNET_ERR), in the paper's order, and its clean error
    published = [0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360,
                 0.866816, 0.826572, 0.819324, 0.564592, 0.853204, 0.646056, 0.717840,
                 0.606500]
    alexnet_clean = 1 - 0.56522
    names = corruptions.IMAGENET_C
    acc = rng.uniform(0.2, 0.9, (2, len(names), 21))  # two models, severities 0..5 by 1/4
    rows = [{"model": m, "corruption": c, "step": k, "level": float(lv), "accuracy": acc[i, j, k]}
            for i, m in enumerate("ab") for j, c in enumerate(names)
            for k, lv in enumerate(corruptions.severity(c, np.linspace(0, 5, 21)))]
    rows += [{"model": m, "corruption": "speckle_noise", "step": k, "level": float(lv),
              "accuracy": 0.5} for m in "ab"
             for k, lv in enumerate(corruptions.seed_levels("speckle_noise"))]
    table = pd.DataFrame(rows)
    clean = {"a": 0.76, "b": 0.7}
    out = metrics.corruption_errors(table, baseline="alexnet", clean_accuracy=clean)
    for i, m in enumerate("ab"):
        errors = 1 - acc[i][:, 4::4]  # severities 1..5 sit at steps 4, 8, .., 20
        ce = [errors[j].mean() / published[j] for j in range(len(names))]
        rel = [(errors[j].mean() - (1 - clean[m])) / (published[j] - alexnet_clean)
               for j in range(len(names))]
        assert out[m]["mCE"] == pytest.approx(np.mean(ce), rel=1e-12)
        assert out[m]["relative_mCE"] == pytest.approx(np.mean(rel), rel=1e-12)
        assert out[m]["corruptions"] == list(names)  # speckle has no AlexNet error
    # CIFAR-10-C: the unnormalised mean error over severities 1..5 of its table
    cifar = table[table["corruption"] == "fog"].copy()
    cifar["level"] = np.tile(corruptions.seed_levels("fog", table="cifar10"), 2)
    flat = metrics.corruption_errors(cifar, baseline=None, clean_accuracy=clean,
                                     benchmark="cifar10")
    assert flat["a"]["mCE"] == pytest.approx((1 - acc[0, names.index("fog"), 4::4]).mean())
    with pytest.raises(ValueError, match="AlexNet's published errors are ImageNet-C's"):
        metrics.corruption_errors(cifar, baseline="alexnet", benchmark="cifar10")
    # a sweep without the severities says so in words
    coarse = table[table["step"] % 8 == 0]
    said = metrics.corruption_errors(coarse, baseline="alexnet", clean_accuracy=clean)
    assert said["a"]["mCE"].startswith("undefined: gaussian_noise was not swept at imagenet "
                                       "severity 1")


def test_the_listing_prints_a_benchmarks_table(capsys):
    from jaxrobust import cli

    assert cli.BENCHMARKS == tables.BENCHMARKS
    assert cli.main(["corruptions", "--table", "cifar10"]) == 0
    text = capsys.readouterr().out
    assert "severities 1-5 at 32 px: 80, 65, 58, 50, 40" in text  # jpeg_compression
    assert "CIFAR-10-C (hendrycks/robustness make_cifar_c.py)" in text
    assert "scale_up" not in text and "gamma" not in text  # not CIFAR-10-C's
    # gaussian_noise sweeps the benchmark's severities, not the study's schedule
    np.testing.assert_allclose(corruptions.seed_levels("gaussian_noise", table="cifar10")[::4],
                               [0, 0.04, 0.06, 0.08, 0.09, 0.1], rtol=1e-6)
