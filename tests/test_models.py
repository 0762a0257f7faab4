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


def _predict(model, x):
    """`model(x, training=False)` as Keras' `predict` runs it: one compiled program
    (called eagerly, Keras runs op by op, and each op compiles apart: ~4x slower for
    Xception from an empty cache)."""
    with jax.numpy_rank_promotion("allow"):  # Keras' Dense broadcasts its bias
        return np.asarray(model.predict(x, verbose=0))


def _keras_model(name, rng, shape=None):
    build = {"vgg16": keras.applications.VGG16, "xception": keras.applications.Xception}[name]
    model = build(include_top=False, weights=None, input_shape=shape or SHAPES[name])
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
    ref = _predict(model, x)
    ours = np.asarray(jax.jit(apply_fn)(params, x))
    assert ours.shape == ref.shape
    scale = np.abs(ref).max()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * scale)
    # grayscale input is repeated to three channels, as the study did
    gray = x[..., :1]
    np.testing.assert_allclose(
        np.asarray(apply_fn(params, gray)),
        _predict(model, np.repeat(gray, 3, -1)), rtol=1e-4, atol=1e-4 * scale)


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


@pytest.mark.parametrize("name,mode", [("xception", "tf"), ("vgg16", "caffe")])
def test_preprocessing_equals_keras_and_runs_inside_the_model(rng, name, mode):
    from jaxrobust.models import preprocess

    module = {"xception": keras.applications.xception, "vgg16": keras.applications.vgg16}
    x = rng.random((2, 7, 5, 3), dtype=np.float32)
    want = np.asarray(module[name].preprocess_input(x * 255.0))
    np.testing.assert_allclose(np.asarray(preprocess.preprocess(x, mode)), want, rtol=1e-6,
                               atol=1e-6)
    assert preprocess.resolve("keras", name) == mode
    # the model takes [0, 1] images and preprocesses them itself; gray is repeated first
    size = 71 if name == "xception" else 32
    gray = rng.random((2, size, size, 1), dtype=np.float32)
    inside = models.get(name, 3, input_shape=(size, size, 1), width=0.125, hidden=8,
                        preprocess="keras")
    plain = models.get(name, 3, input_shape=(size, size, 3), width=0.125, hidden=8)
    a, pa = models.pure(inside)
    b, pb = models.pure(plain)
    rgb = preprocess.preprocess(np.repeat(gray, 3, axis=-1), mode)
    np.testing.assert_allclose(np.asarray(a(pa, gray)), np.asarray(b(pb, rgb)), rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(ValueError, match="preprocess 'bgr'"):
        models.get(name, 3, input_shape=(size, size, 3), preprocess="bgr")


def test_keras_notop_weights_initialise_a_frozen_backbone(tmp_path, rng):
    from jaxrobust import train
    from jaxrobust.config import ModelConfig, TrainConfig

    keras_net = _keras_model("vgg16", rng)
    path = str(tmp_path / models.KERAS_NOTOP["vgg16"])
    _save_legacy(keras_net, path)
    x = rng.random((8, 32, 32, 3), dtype=np.float32)
    y = np.arange(8) % 2
    cfg = ModelConfig(name="vgg16", hidden=8, weights=path, freeze_backbone=True)
    result = train.train(cfg, TrainConfig(epochs=1, batch_size=4), train_images=x,
                         train_labels=y, test_images=x[:2], test_labels=y[:2],
                         class_names=["a", "b"], model_dir=str(tmp_path / "m"),
                         log=lambda s: None)
    assert result.metadata["preprocess"] == "caffe"  # on by default with weights
    # frozen: the backbone is Keras' still, bit for bit; its features equal Keras'
    _, ref = models.load_keras_weights("vgg16", path, input_shape=(32, 32, 3))
    ours = jax.tree.leaves(result.params["backbone"])
    assert len(ours) == len(jax.tree.leaves(ref))
    for a, b in zip(ours, jax.tree.leaves(ref), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    feats = _predict(keras_net, x[:2])
    net = models.backbone("vgg16", in_channels=3)
    apply_fn, params = models.pure(net)
    params = jax.tree.map(lambda _, v: v, params, result.params["backbone"])
    np.testing.assert_allclose(np.asarray(apply_fn(params, x[:2])), feats, rtol=1e-4,
                               atol=1e-4 * np.abs(feats).max())
    # a file of another architecture, a truncated file, a missing one: one clear error
    other = str(tmp_path / "xception.h5")
    _save_legacy(_keras_model("xception", rng), other)
    truncated = tmp_path / "cut.h5"
    truncated.write_bytes(open(path, "rb").read()[:4096])
    gray = str(tmp_path / "gray.h5")  # a VGG16 built for one input channel
    _save_legacy(keras.applications.VGG16(include_top=False, weights=None,
                                          input_shape=(32, 32, 1)), gray)
    for bad, words in ((other, "another architecture|needs"), (str(truncated), "HDF5"),
                       (gray, "input channels")):
        with pytest.raises(ValueError, match=words) as e:
            train.train(ModelConfig(name="vgg16", hidden=8, weights=bad), TrainConfig(epochs=1),
                        train_images=x, train_labels=y, test_images=x[:2], test_labels=y[:2],
                        class_names=["a", "b"], model_dir=str(tmp_path / "bad"),
                        log=lambda s: None)
        assert models.KERAS_NOTOP["vgg16"] in str(e.value)
        assert not (tmp_path / "bad").exists()  # nothing written for a failed start
    with pytest.raises(ValueError, match="does not exist; place Keras' vgg16 notop"):
        models.check_weights_config("vgg16", str(tmp_path / "nope.h5"), width=1.0)
    with pytest.raises(ValueError, match="width 1.0"):
        models.check_weights_config("vgg16", path, width=0.5)


@pytest.mark.parametrize("name", ["vgg16", "xception"])
def test_export_round_trips_through_keras(tmp_path, rng, name):
    from flax import nnx

    shape = SHAPES[name]
    clf = models.get(name, 3, input_shape=shape, hidden=8, seed=int(rng.integers(100)))
    _, params = models.pure(clf)

    def stir(path, v):  # non-trivial batch-norm statistics and biases
        key = jax.tree_util.keystr(path)
        if "var" in key:
            return (v * rng.uniform(0.5, 1.5, v.shape)).astype(v.dtype)
        return (v + rng.normal(0, 0.05, v.shape)).astype(v.dtype)

    nnx.update(clf, jax.tree_util.tree_map_with_path(stir, params))
    build = {"vgg16": keras.applications.VGG16, "xception": keras.applications.Xception}[name]
    x = rng.random((2, *shape), dtype=np.float32)
    ours_fn, ours = models.pure(clf)
    want = np.asarray(ours_fn(ours, x))
    path = models.save_keras_weights(clf, str(tmp_path / "clf.h5"))
    seq = keras.Sequential([build(include_top=False, weights=None, input_shape=shape),
                            keras.layers.Flatten(), keras.layers.Dense(8, activation="relu"),
                            keras.layers.Dense(3)])
    seq.load_weights(path)
    assert seq.count_params() == models.count_params(ours)
    got = _predict(seq, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # the backbone alone loads into keras.applications, and back into jaxrobust
    bb = models.save_keras_weights(clf.backbone, str(tmp_path / "notop.h5"))
    keras_bb = build(include_top=False, weights=None, input_shape=shape)
    keras_bb.load_weights(bb)
    fa, fp = models.pure(clf.backbone)
    feats = np.asarray(fa(fp, x))
    np.testing.assert_allclose(_predict(keras_bb, x), feats, rtol=1e-4,
                               atol=1e-4 * np.abs(feats).max())
    again_fn, again = models.load_keras_weights(name, bb, input_shape=shape)
    np.testing.assert_array_equal(np.asarray(again_fn(again, x)), feats)
    with pytest.raises(ValueError, match="small_cnn|Classifier|takes a vgg16"):
        models.save_keras_weights(models.get("small_cnn", 2, input_shape=(8, 8, 1), width=0.25,
                                             hidden=4), str(tmp_path / "no.h5"))


@pytest.mark.parametrize("name", ["vgg16", "xception"])
def test_saved_study_classifier_loads_and_predicts_as_keras(tmp_path, rng, name):
    # the study's classifier at its 174 x 174 x 3 input, random weights and statistics
    shape = (174, 174, 3)
    base = _keras_model(name, rng, shape)
    study = keras.Sequential([keras.Input(shape), base, keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(4, activation="softmax")])
    x = rng.random((2, *shape), dtype=np.float32)
    want = _predict(study, x)
    for file in ("study.keras", "study.h5"):
        study.save(str(tmp_path / file))
        apply_fn, params, info = models.load_keras_model(str(tmp_path / file))
        assert info == {"name": study.name, "backbone": name, "input_shape": shape,
                        "num_classes": 4, "activation": "softmax"}
        assert models.count_params(params) == study.count_params()
        got = np.asarray(jax.nn.softmax(jax.jit(apply_fn)(params, x), -1))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    # a weights-only file is pointed elsewhere
    base.save_weights(str(tmp_path / "notop.weights.h5"))
    with pytest.raises(ValueError, match="cannot read|not a full-model"):
        models.load_keras_model(str(tmp_path / "notop.weights.h5"))


def _functional_graph(rng):
    """A functional classifier using every layer kind the loader knows, a frozen batch
    norm, a shared layer, a merge and a nested Sequential, with random weights."""
    L = keras.layers
    inp = keras.Input((20, 18, 3))
    x = L.Rescaling(1 / 127.5, offset=-1)(inp)
    x = L.ZeroPadding2D(((1, 0), (2, 1)))(x)
    x = L.Conv2D(6, 3, strides=2, padding="same", activation="relu")(x)
    y = L.SeparableConv2D(6, 3, padding="same", depth_multiplier=2, use_bias=False)(x)
    y = L.BatchNormalization(trainable=False)(y)
    y = L.ReLU(max_value=4.0, negative_slope=0.1)(y)
    x = L.Add()([x, y])
    x = L.DepthwiseConv2D(3, padding="valid")(x)
    shared = L.Conv2D(4, 1, groups=2)
    a = L.AveragePooling2D(3, strides=2, padding="same")(shared(x))
    b = L.MaxPooling2D(2, padding="same")(shared(L.Activation("tanh")(x)))
    x = L.Concatenate()([a, b])
    head = keras.Sequential([L.Flatten(), L.Dropout(0.5), L.Dense(7, activation="gelu")],
                            name="head")
    x = L.Concatenate()([head(x), L.GlobalAveragePooling2D()(x), L.GlobalMaxPooling2D()(x)])
    x = L.Reshape((1, -1))(x)
    x = L.Flatten()(L.BatchNormalization()(x))
    out = L.Activation("softmax")(L.Dense(5)(x))
    model = keras.Model(inp, out, name="graph")
    for layer in [*model.layers, *head.layers]:
        weights = layer.get_weights()
        if weights and not isinstance(layer, keras.Sequential):
            layer.set_weights([(rng.uniform(0.5, 1.5, w.shape) if "variance" in v.path
                                else w + rng.normal(0, 0.2, w.shape)).astype(np.float32)
                               for w, v in zip(weights, layer.weights, strict=True)])
    return model


def test_functional_graph_loads_and_predicts_as_keras(tmp_path, rng):
    model = _functional_graph(rng)
    x = (255 * rng.random((3, 20, 18, 3))).astype(np.float32)
    want = _predict(model, x)
    for file in ("graph.keras", "graph.h5"):
        model.save(str(tmp_path / file))
        apply_fn, params, info = models.load_keras_model(str(tmp_path / file))
        assert info == {"name": "graph", "backbone": "head", "input_shape": (20, 18, 3),
                        "num_classes": 5, "activation": "softmax"}, file
        assert models.count_params(params) == model.count_params()
        got = np.asarray(jax.nn.softmax(jax.jit(apply_fn)(params, x), -1))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=file)
    # the same file as Keras 2 (tf.keras) wrote it: nodes as [layer, node, tensor, kwargs]
    # lists, `batch_input_shape`, `Model` class names, `:0` weight names
    import json

    import h5py

    def keras2(layer):
        cfg = layer["config"]
        if "batch_shape" in cfg:
            cfg["batch_input_shape"] = cfg.pop("batch_shape")
        if layer["class_name"] == "Functional":
            layer["class_name"] = "Model"
        for sub in cfg.get("layers", []):
            keras2(sub)
            sub["inbound_nodes"] = [[[*t["config"]["keras_history"], {}] for t in
                                     (n["args"][0] if isinstance(n["args"][0], list)
                                      else n["args"])] for n in sub.get("inbound_nodes", [])]
        return layer

    with h5py.File(tmp_path / "graph.h5", "r+") as f:
        f.attrs["model_config"] = json.dumps(keras2(json.loads(f.attrs["model_config"])))
        for group in f["model_weights"].values():
            names = [n.decode() if isinstance(n, bytes) else n
                     for n in group.attrs.get("weight_names", [])]
            for n in names:
                group.move(n, n + ":0")
            group.attrs["weight_names"] = [(n + ":0").encode() for n in names]
    apply_fn, params, _ = models.load_keras_model(str(tmp_path / "graph.h5"))
    got = np.asarray(jax.nn.softmax(jax.jit(apply_fn)(params, x), -1))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # a linear output is returned as it is
    linear = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3),
                               keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    linear.save(str(tmp_path / "linear.keras"))
    apply_fn, params, info = models.load_keras_model(str(tmp_path / "linear.keras"))
    assert info["activation"] == "linear" and info["input_shape"] == (6, 6, 1)
    x = rng.random((2, 6, 6, 1), dtype=np.float32)
    with jax.numpy_rank_promotion("allow"):
        np.testing.assert_allclose(apply_fn(params, x), linear.predict(x, verbose=0),
                                   atol=1e-5)


def test_unsupported_keras_models_are_refused_by_name(tmp_path):
    other = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3),
                              keras.layers.UpSampling2D(), keras.layers.LayerNormalization(),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    other.save(str(tmp_path / "other.keras"))
    with pytest.raises(ValueError, match="unsupported layers LayerNormalization, UpSampling2D"):
        models.load_keras_model(str(tmp_path / "other.keras"))
    two = keras.Input((4, 4, 3)), keras.Input((4, 4, 3))
    pair = keras.Model(two, keras.layers.Dense(2)(keras.layers.Flatten()(
        keras.layers.Add()(list(two)))))
    pair.save(str(tmp_path / "pair.keras"))
    with pytest.raises(ValueError, match="2 inputs and 1 outputs"):
        models.load_keras_model(str(tmp_path / "pair.keras"))
    # a file whose weights do not fit its config (a Dense of other width)
    import h5py
    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="out")])
    small.save(str(tmp_path / "small.h5"))
    with h5py.File(tmp_path / "small.h5", "r+") as f:
        group = f["model_weights"]["out"]
        name = [n.decode() if isinstance(n, bytes) else n
                for n in group.attrs["weight_names"]][0]
        del group[name]
        group[name] = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match=r"'out' \(Dense\): kernel has shape \(4, 5\)"):
        models.load_keras_model(str(tmp_path / "small.h5"))


def test_sweep_cli_runs_a_saved_keras_model(tmp_path, rng):
    from jaxrobust import cli

    # a small classifier of the study's shape (backbone, Flatten, Dense, Dense): the
    # command and the config are under test here, VGG16 and Xception above
    base = keras.Sequential([keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
                             keras.layers.MaxPooling2D()], name="backbone")
    study = keras.Sequential([keras.Input((32, 32, 3)), base, keras.layers.Flatten(),
                              keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(4, activation="softmax")])
    path = str(tmp_path / "study.keras")
    study.save(path)
    out = tmp_path / "sweep"
    assert cli.main(["-q", "sweep", "--keras-model", path, "--corruptions", "gaussian_noise",
                     "--set", "data.image_size=32", "--set", "data.n_images=8",
                     "--set", "sweep.protocol=study", "--out", str(out)]) == 0
    for name in ("results.csv", "per_image.npz", "summary.json", "report.html"):
        assert (out / name).stat().st_size > 0, name
    assert "study" in (out / "report.html").read_text()
    assert cli.main(["-q", "sweep", "--keras-model", path, "--class-names", "a", "b",
                     "--set", "data.image_size=32", "--out", str(tmp_path / "x")]) == 2
    # from a config: the saved model takes the place of a trained one in the main job
    # (a three-class task without the median, whose compiles would dominate the test)
    three = keras.Sequential([keras.Input((32, 32, 3)), base, keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax")])
    path = str(tmp_path / "three.keras")
    three.save(path)
    run = tmp_path / "run"
    assert cli.main(["-q", "run", "--set", f"models=[{{keras_model: {path}}}]",
                     "--set", "data.image_size=32", "--set", "data.n_images=8",
                     "--set", "task.corruptions=[scale_up, gaussian_noise]",
                     "--set", "sweep.levels={scale_up: [0, 2], gaussian_noise: [0, 0.1]}",
                     "--out", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "Results by model" in page and "three" in page
    assert not (run / "models").exists() or not any((run / "models").iterdir())
