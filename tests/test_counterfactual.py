"""Attribution-guided edits: the rule against NumPy, searches against plain loops."""

import base64
import csv
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import attribution, cli
from jaxrobust import counterfactual as cf

H, W, K = 10, 10, 4


def mlp(rng, hidden=32):
    """A small ReLU classifier of (N, H, W, 1) images with K classes, random weights."""
    params = {"w1": jnp.asarray(rng.normal(0, 0.3, (H * W, hidden)), jnp.float32),
              "b1": jnp.asarray(rng.normal(0, 0.1, hidden), jnp.float32),
              "w2": jnp.asarray(rng.normal(0, 0.5, (hidden, K)), jnp.float32)}

    def apply_fn(p, x):
        return jax.nn.relu(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"][None]) @ p["w2"]

    return apply_fn, params


def predictions(apply_fn, params, x):
    return np.asarray(jnp.argmax(apply_fn(params, jnp.asarray(x)), -1))


def reference_edit(images, attributions, fraction, bright, background):
    """The study's rule, written plainly in NumPy."""
    out = images.copy()
    masks = np.zeros(images.shape[:3], bool)
    k = max(int(np.round(fraction * H * W)), 1)
    for i in range(len(images)):
        score = attributions[i].sum(-1).ravel()
        top = np.argsort(-np.abs(score), kind="stable")[:k]
        top = top[score[top] != 0]
        masks[i].flat[top] = True
        for p in top:
            r, c = divmod(p, W)
            out[i, r, c] = bright if score[p] > 0 else background[i, 0, 0]
    return out, masks


@pytest.mark.parametrize("fraction", [0.01, 0.02, 0.13, 0.5, 1.0])
def test_edit_rule_changes_the_requested_fraction_in_the_right_direction(rng, fraction):
    images = rng.uniform(0.2, 0.8, (6, H, W, 1)).astype(np.float32)
    attributions = rng.normal(size=(6, H, W, 1)).astype(np.float32)
    edited, mask = cf.edit(images, attributions, fraction, bright=1.0)
    edited, mask = np.asarray(edited), np.asarray(mask)
    assert (mask.sum((1, 2)) == max(round(fraction * H * W), 1)).all()
    positive = mask & (attributions[..., 0] > 0)
    negative = mask & (attributions[..., 0] < 0)
    assert (edited[positive] == 1.0).all()
    background = np.asarray(cf.background_value(images))
    np.testing.assert_array_equal(edited[negative][:, 0],
                                  np.broadcast_to(background, images.shape)[negative][:, 0])
    np.testing.assert_array_equal(edited[~mask], images[~mask])
    # the edited pixels are the largest |attribution| ones: NumPy's ranking agrees
    ref, ref_mask = reference_edit(images, attributions, fraction, 1.0, background)
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_array_equal(edited, ref)


def test_background_is_the_border_median_and_zero_attribution_is_never_edited(rng):
    images = rng.random((3, H, W, 1)).astype(np.float32)
    border = np.concatenate([images[:, 0, :, 0], images[:, -1, :, 0], images[:, 1:-1, 0, 0],
                             images[:, 1:-1, -1, 0]], axis=1)
    np.testing.assert_allclose(np.asarray(cf.background_value(images))[:, 0, 0, 0],
                               np.median(border, axis=1), rtol=1e-6)
    attributions = np.zeros_like(images)
    attributions[:, 2, 3] = 1.0
    _, mask = cf.edit(images, attributions, 0.5)
    assert np.asarray(mask).sum() == 3  # one non-zero pixel per image, though 50 were asked


def test_ig_of_the_logit_difference_equals_the_difference_of_igs(rng):
    apply_fn, params = mlp(rng)
    x = rng.random((5, H, W, 1)).astype(np.float32)
    a, b = rng.integers(0, K, 5), rng.integers(0, K, 5)
    weights = jax.nn.one_hot(a, K) - jax.nn.one_hot(b, K)
    both, delta = attribution.integrated_gradients(apply_fn, params, x, output_weights=weights,
                                                   steps=16, return_delta=True)
    separate = (attribution.integrated_gradients(apply_fn, params, x, a, steps=16)
                - attribution.integrated_gradients(apply_fn, params, x, b, steps=16))
    np.testing.assert_allclose(np.asarray(both), np.asarray(separate), rtol=1e-4,
                               atol=1e-5 * float(np.abs(separate).max()))
    # the delta is the completeness gap of the weighted output, from the black baseline
    def weighted(images):
        logits = np.asarray(apply_fn(params, images), np.float64)
        return logits[np.arange(5), a] - logits[np.arange(5), b]

    gap = np.asarray(both, np.float64).sum((1, 2, 3)) - (weighted(x) - weighted(0 * x))
    np.testing.assert_allclose(np.asarray(delta), gap, rtol=1e-4,
                               atol=1e-5 * float(np.abs(weighted(x)).max()))


@pytest.mark.parametrize("use_difference", [False, True])
def test_fraction_search_agrees_with_a_python_loop(rng, use_difference):
    apply_fn, params = mlp(rng)
    x = rng.random((12, H, W, 1)).astype(np.float32)
    pred = predictions(apply_fn, params, x)
    labels = (pred + rng.integers(0, K, 12)) % K  # some right already, most wrong
    fractions = [0.05, 0.1, 0.2, 0.3, 0.5, 0.8]
    got = cf.ig_fraction_search(apply_fn, params, x, labels, fractions=fractions, steps=16,
                                use_difference=use_difference)
    if use_difference:
        weights = jax.nn.one_hot(labels, K) - jax.nn.one_hot(pred, K)
        maps = attribution.integrated_gradients(apply_fn, params, x, output_weights=weights,
                                                steps=16)
    else:
        maps = attribution.integrated_gradients(apply_fn, params, x, labels, steps=16)
    np.testing.assert_allclose(np.asarray(got.attributions), np.asarray(maps), rtol=1e-5,
                               atol=1e-6)
    background = np.asarray(cf.background_value(x))
    for i in range(len(x)):
        expected = 0.0 if pred[i] == labels[i] else np.nan
        if pred[i] != labels[i]:
            for f in fractions:  # the first fraction whose edit makes the image right
                edited, _ = reference_edit(x[i:i + 1], np.asarray(maps)[i:i + 1], f, 1.0,
                                           background[i:i + 1])
                if predictions(apply_fn, params, edited)[0] == labels[i]:
                    expected = f
                    break
        np.testing.assert_equal(float(got.fraction[i]), np.float32(expected))
        assert bool(got.success[i]) == (not np.isnan(expected))
    right = np.asarray(got.success)
    assert (np.asarray(got.fraction) > 0).any()  # some images needed an edit and got one
    assert (predictions(apply_fn, params, got.images)[right] == labels[right]).all()


def test_searches_are_one_compiled_call_over_all_candidates(rng):
    apply_fn, params = mlp(rng)
    traces = []

    def counted(p, x):
        traces.append(x.shape)  # runs once per trace, not per evaluation
        return apply_fn(p, x)

    x = rng.random((4, H, W, 1)).astype(np.float32)
    labels = (predictions(apply_fn, params, x) + 1) % K
    counts = []
    for fractions in ([0.1, 0.2], list(np.linspace(0.01, 1.0, 40))):
        traces.clear()
        cf.saliency_edit(counted, params, x, labels, fractions=fractions)
        counts.append(len(traces))
    # 40 candidates trace no more than 2 (the maps' program is kept between calls)
    assert counts[1] <= counts[0] <= 6
    for trials, max_flips in ((2, 5), (16, 60)):
        traces.clear()
        cf.random_flip_search(jax.random.key(0), counted, params, x, labels, trials=trials,
                              max_flips=max_flips)
        counts.append(len(traces))
    assert counts[2] == counts[3] <= 6


def _flip_until_right(apply_fn, params, image, label, key, i, t, max_flips):
    """The study's loop: invert pixels of trial t's random order until the model is right.

    Returns `(flips needed or -1, the image after the last flip)`.
    """
    order = np.asarray(jax.random.permutation(
        jax.random.fold_in(jax.random.fold_in(key, i), t), H * W))
    img = image.copy()
    for k in range(1, max_flips + 1):
        r, c = divmod(int(order[k - 1]), W)
        img[r, c] = 1.0 - img[r, c]
        if predictions(apply_fn, params, img[None])[0] == label:
            return k, img
    return -1, img


def test_one_trial_is_the_studys_single_run(rng):
    # the study: turn random pixels to their opposite colour, one after another, until
    # the model is right; trials=1 is exactly that one sequence
    apply_fn, params = mlp(rng)
    x = rng.random((4, H, W, 1)).astype(np.float32)
    labels = (predictions(apply_fn, params, x) + rng.integers(1, K, 4)) % K
    key = jax.random.key(int(rng.integers(1 << 30)))
    edit = cf.random_flip_search(key, apply_fn, params, x, labels, max_flips=60, trials=1)
    for i in range(len(x)):
        needed, img = _flip_until_right(apply_fn, params, x[i], labels[i], key, i, 0, 60)
        assert bool(edit.success[i]) == (needed > 0)
        if needed > 0:
            assert int(edit.pixels_changed[i]) == needed
            np.testing.assert_array_equal(np.asarray(edit.images[i]), img)


def test_random_flips_are_reproducible_and_minimal_per_trial(rng):
    apply_fn, params = mlp(rng)
    x = rng.random((5, H, W, 1)).astype(np.float32)
    labels = (predictions(apply_fn, params, x) + rng.integers(1, K, 5)) % K
    key = jax.random.key(int(rng.integers(1 << 30)))
    first, per_trial = cf.random_flip_search(key, apply_fn, params, x, labels, max_flips=40,
                                             trials=6, block=4, return_trials=True)
    again = cf.random_flip_search(key, apply_fn, params, x, labels, max_flips=40, trials=6,
                                  block=4)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    per_trial = np.asarray(per_trial)
    # a plain loop over flips for every trial, with the same random orders
    for i in range(len(x)):
        for t in range(6):
            needed, _ = _flip_until_right(apply_fn, params, x[i], labels[i], key, i, t, 40)
            assert per_trial[i, t] == needed, (i, t)
    hits = np.where(per_trial >= 0, per_trial, 10**6).min(1)
    found = (per_trial >= 0).any(1)
    assert found.any() and (per_trial > 1).any()  # the comparison is not vacuous
    np.testing.assert_array_equal(np.asarray(first.success), found)
    np.testing.assert_array_equal(np.asarray(first.pixels_changed)[found], hits[found])
    np.testing.assert_array_equal(np.asarray(first.l0)[found], hits[found])
    edited = np.asarray(first.images)
    assert (predictions(apply_fn, params, edited)[found] == labels[found]).all()


def test_correct_images_need_no_edit(rng):
    apply_fn, params = mlp(rng)
    x = rng.random((4, H, W, 1)).astype(np.float32)
    labels = predictions(apply_fn, params, x)
    for result in (cf.ig_difference_edit(apply_fn, params, x, labels, steps=8),
                   cf.ig_fraction_search(apply_fn, params, x, labels, steps=8),
                   cf.saliency_edit(apply_fn, params, x, labels),
                   cf.random_flip_search(jax.random.key(0), apply_fn, params, x, labels)):
        assert np.asarray(result.success).all()
        assert (np.asarray(result.pixels_changed) == 0).all()
        assert (np.asarray(result.l0) == 0).all() and (np.asarray(result.l2) == 0).all()
        np.testing.assert_array_equal(np.asarray(result.images), x)
        assert (np.asarray(result.fraction) == 0).all()


def test_saliency_edit_measures_vanished_gradients(rng):
    apply_fn, params = mlp(rng)
    params = {**params, "b1": params["b1"] - 1e3}  # every ReLU dead: the gradient is zero
    x = rng.random((3, H, W, 1)).astype(np.float32)
    labels = (predictions(apply_fn, params, x) + 1) % K
    result = cf.saliency_edit(apply_fn, params, x, labels, fractions=[0.1, 0.5])
    assert (np.asarray(result.vanished) == 1).all()
    assert (np.asarray(result.pixels_changed) == 0).all()
    assert not np.asarray(result.success).any()


def test_bad_input_gives_clear_errors(rng):
    apply_fn, params = mlp(rng)
    x = rng.random((3, H, W, 1)).astype(np.float32)
    with pytest.raises(ValueError, match=r"true_labels must lie in \[0, 4\)"):
        cf.ig_difference_edit(apply_fn, params, x, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match=r"fractions must lie in \(0, 1\]"):
        cf.ig_difference_edit(apply_fn, params, x, np.array([0, 1, 2]), fraction=0.0)
    with pytest.raises(ValueError, match=r"fractions must lie in \(0, 1\]"):
        cf.ig_fraction_search(apply_fn, params, x, np.array([0, 1, 2]), fractions=[0.1, 1.5])
    with pytest.raises(ValueError, match=r"images must be a float batch"):
        cf.saliency_edit(apply_fn, params, x[0], np.array([0]))
    with pytest.raises(ValueError, match=r"true_labels must be 3 integer"):
        cf.random_flip_search(jax.random.key(0), apply_fn, params, x, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"max_flips must be at least 1"):
        cf.random_flip_search(jax.random.key(0), apply_fn, params, x, np.array([0, 1, 2]),
                              max_flips=0)


def test_counterfactual_command_edits_every_misclassified_image(tmp_path, capsys):
    out = tmp_path / "cf"
    args = ["counterfactual", "--set", "train.epochs=1", "--set", "data.image_size=12",
            "--set", "models=[{name: small_cnn, width: 0.25, hidden: 8}]",
            "--set", "counterfactual.max_images=4", "--set", "counterfactual.ig_steps=8",
            "--set", "counterfactual.fractions=[0.05, 0.2, 0.5]",
            "--set", "counterfactual.max_flips=20", "--set", "counterfactual.trials=4",
            "--out", str(out)]
    assert cli.main(args) == 0
    with open(out / "edits.csv") as f:
        rows = list(csv.DictReader(f))
    images = {r["image"] for r in rows}
    assert len(images) == 4 and len(rows) == 4 * 5
    assert {r["method"] for r in rows} == {"ig_difference", "ig_search",
                                          "ig_difference_search", "saliency_search",
                                          "random_flips"}
    assert all(r["true"] != r["predicted"] for r in rows)
    for name in ("report.html", "summary.json", "edits_ig_search.png", "edits_random_flips.png"):
        assert (out / name).stat().st_size > 0, name
    # summary first: what was run, then the success table, then the figures
    page = (out / "report.html").read_text()
    assert page.index("What was run") < page.index("Success per method") < page.index("Figures")
    assert "parameters" in page and "<pre>{" not in page
    shown = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(shown) == 5 and all(base64.b64decode(b).startswith(b"\x89PNG") for b in shown)
    # the folder stays whole: another config stops before any work, the same one is done
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert cli.main([*args, "--set", "counterfactual.ig_steps=16"]) == 2
    assert "counterfactual.ig_steps (8 -> 16)" in capsys.readouterr().err
    assert cli.main(args) == 0 and "nothing to do" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert cli.main(["run", *args[1:]]) == 2  # the main job does not take this folder
    assert "holds the results of `jaxrobust counterfactual`" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert cli.main(["counterfactual", "--set", "counterfactual.fraction=2", "--out",
                     str(tmp_path / "bad")]) == 2
    assert "fraction" in capsys.readouterr().err
