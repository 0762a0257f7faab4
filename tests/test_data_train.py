"""Data sources, the corruption-type task, configs, training and checkpoints."""

import os

import jax
import numpy as np
import pytest
from skimage import io

from jaxrobust import config, data, train


def _png(path, rng, size=20, rgb=False):
    shape = (size, size, 3) if rgb else (size, size)
    io.imsave(path, rng.integers(0, 256, shape).astype(np.uint8), check_contrast=False)


def test_folder_source_labels_skips_and_strict(tmp_path, rng):
    for i in range(3):
        _png(tmp_path / f"BPD_{i}.png", rng)
        _png(tmp_path / f"CLR_{i}.png", rng, rgb=True)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "BPD_broken.png").write_bytes(b"\x89PNG truncated")
    with pytest.warns(UserWarning, match="skipping"):
        ds = data.load_folder(str(tmp_path), image_size=16, log=lambda s: None)
    assert ds.images.shape == (6, 16, 16, 1) and ds.images.dtype == np.float32
    assert ds.class_names == ("BPD", "CLR") and np.bincount(ds.labels).tolist() == [3, 3]
    np.testing.assert_array_equal(ds.images, np.round(ds.images * 255) / 255)  # 8-bit levels
    with pytest.raises(ValueError, match="BPD_broken.png|notes.txt"):
        data.load_folder(str(tmp_path), image_size=16, strict=True)
    rgb = data.load_folder(str(tmp_path), image_size=16, channels=3, log=lambda s: None)
    assert rgb.images.shape[-1] == 3


def test_folder_subfolders_and_bad_folders(tmp_path, rng):
    for cls in ("a", "b"):
        os.makedirs(tmp_path / cls)
        _png(tmp_path / cls / "x.png", rng)
    ds = data.load(f"folder:{tmp_path}", image_size=8)
    assert ds.class_names == ("a", "b")
    os.makedirs(tmp_path / "c")
    (tmp_path / "c" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="class 'c' has no readable images"):
        data.load(f"folder:{tmp_path}", image_size=8)
    empty = tmp_path / "empty"
    os.makedirs(empty)
    with pytest.raises(ValueError, match="is empty"):
        data.load(f"folder:{empty}", image_size=8)
    with pytest.raises(ValueError, match="does not exist"):
        data.load(f"folder:{tmp_path / 'nope'}", image_size=8)
    with pytest.raises(ValueError, match="unknown data source"):
        data.load("imagenet", image_size=8)


def test_phantom_and_digits():
    a = data.load_phantom(6, image_size=32, seed=1)
    b = data.load_phantom(6, image_size=32, seed=1)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.images.shape == (6, 32, 32, 1) and a.class_names == data.PHANTOM_CLASSES
    assert 0.0 <= a.images.min() and a.images.max() <= 1.0 and a.images.std() > 0.05
    digits = data.load_digits(image_size=28)  # shipped: no scikit-learn needed
    assert digits.images.shape == (1797, 28, 28, 1) and set(digits.labels) == set(range(10))
    sklearn = pytest.importorskip("sklearn.datasets")
    reference = sklearn.load_digits()  # the shipped file holds scikit-learn's arrays
    with np.load(data.sources.DIGITS_FILE) as z:
        np.testing.assert_array_equal(z["images"], reference.images)
        np.testing.assert_array_equal(z["labels"], reference.target)


def test_tfds_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets not installed")
    with tfds.testing.mock_data(num_examples=5):
        ds = data.load("tfds:mnist", image_size=16)
    assert ds.images.shape == (5, 16, 16, 1)


def test_streamed_sources_read_what_the_eager_loaders_read(tmp_path, rng):
    # tfds' data_source and a folder, read lazily (data.stream), give the eager
    # loaders' images as uint8 (k / 255 exactly) and their labels
    from jaxrobust.data import stream

    tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets not installed")
    with tfds.testing.mock_data(num_examples=6):
        eager = data.load("tfds:mnist", image_size=16)
        source, names = stream.open_source("tfds:mnist/train", image_size=16, channels=1)
        images, labels = source[np.arange(6)]
    assert len(source) == 6 and len(names) == 10 and images.dtype == np.uint8
    np.testing.assert_allclose(images / 255.0, eager.images, atol=1e-6)
    np.testing.assert_array_equal(labels, eager.labels)
    from skimage import io

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            io.imsave(tmp_path / c / f"{i}.png", rng.integers(0, 256, (20, 14, 3), np.uint8),
                      check_contrast=False)
    eager = data.load(f"folder:{tmp_path}", image_size=12, channels=1)
    source, names = stream.open_source(f"folder:{tmp_path}", image_size=12, channels=1)
    images, labels = source[np.arange(6)]
    assert names == list(eager.class_names) == ["a", "b"]
    np.testing.assert_allclose(images / 255.0, eager.images, atol=1e-6)
    np.testing.assert_array_equal(labels, eager.labels)


def test_task_is_balanced_reproducible_and_labelled(rng):
    images = data.load_phantom(8, image_size=24).images
    a = data.corruption_task(jax.random.key(3), images)
    b = data.corruption_task(jax.random.key(3), images)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.class_names == ("original", "scale_up", "median_blur", "gaussian_noise")
    assert np.bincount(a.labels).tolist() == [8, 8, 8, 8]
    assert np.all(a.levels[a.labels == 0] == 0) and np.all(a.levels[a.labels > 0] > 0)
    blur = a.levels[a.labels == 2]
    np.testing.assert_array_equal(blur, np.round(blur))
    two = data.corruption_task(jax.random.key(3), images, corruptions=("blur", "noise"))
    assert two.class_names == ("original", "median_blur", "gaussian_noise")
    train_idx, test_idx = data.split(10, test_fraction=0.3, seed=0)
    assert len(test_idx) == 3 and not set(train_idx) & set(test_idx)
    # the rotations: jax.random.randint's values, drawn at a shared length and cut
    from jaxrobust.data.task import _quarter_turns

    for n in (1, 8, int(rng.integers(2, 3000))):
        key = jax.random.key(int(rng.integers(2**31)))
        np.testing.assert_array_equal(_quarter_turns(key, n), jax.random.randint(key, (n,), 0, 4))


def test_config_files_overrides_and_errors(tmp_path):
    cfg = config.load("configs/demo.yaml", ["train.epochs=2", "models.1.width=0.25"])
    assert cfg.train.epochs == 2 and cfg.models[1].width == 0.25
    assert cfg.models[0].name == "xception"
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epocs: 3\n")
    with pytest.raises(ValueError, match="unknown key train.epocs"):
        config.load(str(bad))
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        config.load(str(bad))
    with pytest.raises(ValueError, match="must be int"):
        config.load(None, ["train.batch_size=big"])
    for name in ("demo", "ultrasound_xception", "ultrasound_vgg16", "digits_ig"):
        config.load(f"configs/{name}.yaml")
    # the sweep's protocol keys
    cfg = config.load(None, ["sweep.protocol=study", "sweep.levels.blur=[0, 7.999999999999999]",
                             "sweep.ssim_data_range=2", "sweep.limit_ssim=0.9"])
    assert cfg.sweep.levels == {"blur": [0, 7.999999999999999]} and cfg.sweep.limit_ssim == 0.9
    for override, words in (("sweep.protocol=seed", "was renamed"),
                            ("sweep.protocol=exact", "use continuous or study"),
                            ("sweep.levels.hail=[1]", "unknown corruption 'hail'"),
                            ("sweep.levels.blur=[]", "non-empty list of numbers"),
                            ("sweep.ssim_data_range=0", "must be positive"),
                            ("sweep.limit_ssim=3", "must lie in")):
        with pytest.raises(ValueError, match=words):
            config.validate(config.load(None, [override]))


def _tiny_task():
    images = data.load_phantom(16, image_size=24).images
    tr, te = data.split(16, test_fraction=0.25, seed=0)
    return (data.corruption_task(jax.random.key(0), images[tr]),
            data.corruption_task(jax.random.key(1), images[te]))


def test_training_loss_falls_checkpoints_restore_and_resume(tmp_path):
    task_train, task_test = _tiny_task()
    model = config.ModelConfig(name="small_cnn", width=0.5, hidden=32)
    kwargs = dict(train_images=task_train.images, train_labels=task_train.labels,
                  test_images=task_test.images, test_labels=task_test.labels,
                  class_names=task_train.class_names, model_dir=str(tmp_path / "m"),
                  log=lambda s: None)
    first = train.train(model, config.TrainConfig(epochs=2, batch_size=16,
                                                  learning_rate=3e-3), **kwargs)
    assert first.history[-1]["train_loss"] < first.history[0]["train_loss"]
    apply_fn, params, meta = train.restore(str(tmp_path / "m"))
    assert meta["class_names"] == list(task_train.class_names) and meta["epoch"] == 2
    x = task_test.images[:4]
    np.testing.assert_allclose(np.asarray(apply_fn(params, x)),
                               np.asarray(first.apply_fn(first.params, x)), rtol=1e-5, atol=1e-5)
    # running again with more epochs resumes after epoch 2
    lines = []
    more = train.train(model, config.TrainConfig(epochs=3, batch_size=16, learning_rate=3e-3),
                       **{**kwargs, "log": lines.append})
    assert any("resuming" in line for line in lines) and len(more.history) == 3
    other = config.ModelConfig(name="small_cnn", width=0.25, hidden=32)
    with pytest.raises(ValueError, match="another configuration"):
        train.train(other, config.TrainConfig(epochs=1), **kwargs)
    with pytest.raises(ValueError, match="no trained model"):
        train.restore(str(tmp_path))
