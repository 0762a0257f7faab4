"""The parameter-randomisation sanity check against a plain loop (SciPy, scikit-image)."""

import jax
import numpy as np
import pytest
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from jaxrobust import attribution, models

SHAPE = (16, 16, 1)


@pytest.fixture(scope="module")
def net():
    return models.pure(models.get("small_cnn", num_classes=4, input_shape=SHAPE, width=0.25,
                                  hidden=8, seed=5))


def test_layers_are_ordered_from_the_output_down(net):
    apply_fn, params = net
    names = [n for n, _ in attribution.layer_order(apply_fn, params, np.zeros((1, *SHAPE)))]
    assert names == ["['logits']", "['hidden']", "['backbone']['conv2']",
                     "['backbone']['conv1']"]


def test_cascading_randomisation_equals_a_plain_loop(net, rng):
    apply_fn, params = net
    x = rng.random((3, *SHAPE), dtype=np.float32)
    targets = rng.integers(0, 4, 3)
    key = jax.random.key(int(rng.integers(1 << 30)))
    got = attribution.parameter_randomization(key, apply_fn, params, x, targets)
    order = attribution.layer_order(apply_fn, params, x[:1])
    leaves, treedef = jax.tree_util.tree_flatten(params)

    def magnitude(p):
        m = np.abs(np.asarray(attribution.saliency(apply_fn, p, x, targets))).sum(-1)
        return m / m.max(axis=(1, 2), keepdims=True)

    clean = magnitude(params)
    mixed = list(leaves)
    for k, (_, idx) in enumerate(order):
        for i in idx:  # randomise this layer too: its entries permuted
            mixed[i] = np.asarray(jax.random.permutation(jax.random.fold_in(key, i),
                                                         np.ravel(leaves[i]))).reshape(
                np.shape(leaves[i]))
        maps = magnitude(jax.tree_util.tree_unflatten(treedef, mixed))
        for n in range(3):
            rho = spearmanr(clean[n].ravel(), maps[n].ravel()).statistic
            assert float(got["rank_correlation"][k, n]) == pytest.approx(rho, abs=1e-4)
            s = structural_similarity(clean[n], maps[n], data_range=1.0)
            assert float(got["ssim"][k, n]) == pytest.approx(s, abs=1e-4)
    # randomising the whole network leaves little of the trained model's maps
    assert np.mean(np.asarray(got["rank_correlation"])[-1]) < 0.9


def test_randomisation_checks_its_arguments(net):
    apply_fn, params = net
    with pytest.raises(ValueError, match="method must be"):
        attribution.parameter_randomization(jax.random.key(0), apply_fn, params,
                                            np.zeros((1, *SHAPE), np.float32), [0],
                                            method="lrp")
