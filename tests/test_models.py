"""Flax backbones against Keras (JAX backend) given the same weights."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import numpy as np
import pytest

from jaxrobust import models

keras = pytest.importorskip("keras", reason="keras is not installed (pip install keras)")

SHAPES = {"vgg16": (32, 32, 3), "xception": (71, 71, 3)}
COUNTS = {"vgg16": 14_714_688, "xception": 20_861_480}


def _keras_model(name, rng):
    build = {"vgg16": keras.applications.VGG16, "xception": keras.applications.Xception}[name]
    model = build(include_top=False, weights=None, input_shape=SHAPES[name])
    # Random batch-norm statistics and biases, so that every variable is exercised.
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([
                (rng.uniform(0.5, 1.5, w.shape) if "moving_variance" in v.path
                 else w + rng.normal(0, 0.05, w.shape)).astype(np.float32)
                for w, v in zip(weights, layer.weights, strict=True)
            ])
    return model


def _save_legacy(model, path):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


@pytest.mark.parametrize("name", ["vgg16", "xception"])
@pytest.mark.parametrize("legacy", [False, True])
def test_features_match_keras(tmp_path, rng, name, legacy):
    model = _keras_model(name, rng)
    assert model.count_params() == COUNTS[name]
    path = str(tmp_path / ("notop.h5" if legacy else "model.weights.h5"))
    if legacy:
        _save_legacy(model, path)
    else:
        model.save_weights(path)
    apply_fn, params = models.load_keras_weights(name, path, input_shape=SHAPES[name])
    assert models.count_params(params) == COUNTS[name]
    x = rng.random((2, *SHAPES[name]), dtype=np.float32)
    ref = np.asarray(model(x, training=False))
    ours = np.asarray(jax.jit(apply_fn)(params, x))
    assert ours.shape == ref.shape
    scale = np.abs(ref).max()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * scale)
    # grayscale input is repeated to three channels, as the study did
    gray = x[..., :1]
    np.testing.assert_allclose(
        np.asarray(apply_fn(params, gray)),
        np.asarray(model(np.repeat(gray, 3, -1), training=False)), rtol=1e-4, atol=1e-4 * scale)


def test_wrong_architecture_file_is_rejected(tmp_path, rng):
    model = _keras_model("vgg16", rng)
    path = str(tmp_path / "vgg.weights.h5")
    model.save_weights(path)
    with pytest.raises(ValueError, match="another architecture"):
        models.load_keras_weights("xception", path, input_shape=(71, 71, 3))
    legacy = str(tmp_path / "vgg_legacy.h5")
    _save_legacy(model, legacy)
    with pytest.raises(ValueError, match="another architecture|needs"):
        models.load_keras_weights("xception", legacy, input_shape=(71, 71, 3))
    with pytest.raises(ValueError, match="does not exist"):
        models.load_keras_weights("vgg16", str(tmp_path / "nope.h5"), input_shape=(32, 32, 3))
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(ValueError, match="HDF5"):
        models.load_keras_weights("vgg16", str(junk), input_shape=(32, 32, 3))
