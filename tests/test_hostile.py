"""Hostile input end to end through the CLI: one clear line, exit 2, nothing half-written.

Each case is a row of the "Hostile input" table in docs/robustness.md; a full disk
during the main job's report is tested in test_cli.py (with the main job itself).
"""

import errno
import json
import shutil

import numpy as np
import pytest
from skimage import io

from jaxrobust import cli, data

TINY = ["--set", "data.image_size=12", "--set", "train.epochs=1",
        "--set", "models=[{name: small_cnn, width: 0.25, hidden: 8}]"]


def _fails(args, capsys, match):
    """Runs the CLI with --quiet; checks exit 2 and that stderr is one `jaxrobust: error:`
    line holding `match` (without --quiet, progress lines come before it)."""
    assert cli.main(["--quiet", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert len(err) == 1 and err[0].startswith("jaxrobust: error: ") and match in err[0], err
    return err[-1]


def _write_images(folder, rng, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        io.imsave(folder / name, rng.integers(0, 256, (16, 16), dtype=np.uint8),
                  check_contrast=False)


@pytest.fixture
def folder(tmp_path, rng):
    root = tmp_path / "images"
    _write_images(root, rng, [f"{c}_{i}.png" for c in ("BPD", "AC") for i in range(3)])
    return root


def test_truncated_and_non_image_files(folder, tmp_path, capsys):
    (folder / "BPD_9.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    _fails(["run", *TINY, "--set", f"data.source=folder:{folder}", "--set", "data.strict=true",
            "--out", str(out)], capsys, "BPD_9.png: unreadable")
    assert not out.exists()
    (folder / "BPD_9.png").unlink()
    (folder / "notes.txt").write_text("not an image")
    _fails(["run", *TINY, "--set", f"data.source=folder:{folder}", "--set", "data.strict=true",
            "--out", str(out)], capsys, "notes.txt: not an image file")
    # without strict: skipped with a warning naming the file, and the data still load
    with pytest.warns(UserWarning, match="notes.txt"):
        ds = data.load(f"folder:{folder}", image_size=12, log=lambda s: None)
    assert len(ds.images) == 6


def test_mixed_sizes_and_modes_are_converted(tmp_path, rng):
    root = tmp_path / "mixed"
    root.mkdir()
    io.imsave(root / "A_gray.png", rng.integers(0, 256, (30, 20), dtype=np.uint8))
    io.imsave(root / "A_rgb.png", rng.integers(0, 256, (50, 40, 3), dtype=np.uint8))
    io.imsave(root / "B_rgba.png", rng.integers(0, 256, (17, 23, 4), dtype=np.uint8))
    io.imsave(root / "B_16bit.png", rng.integers(0, 65536, (25, 25), dtype=np.uint16))
    for channels in (1, 3):
        ds = data.load(f"folder:{root}", image_size=12, channels=channels)
        assert ds.images.shape == (4, 12, 12, channels) and ds.images.dtype == np.float32
        assert 0 <= ds.images.min() and ds.images.max() <= 1
        assert ds.class_names == ("A", "B")


def test_nan_and_inf_pixels(folder, tmp_path, capsys, rng):
    bad = rng.random((16, 16)).astype(np.float32)
    bad[3, 4], bad[5, 6] = np.nan, np.inf
    io.imsave(folder / "AC_nan.tif", bad)
    _fails(["run", *TINY, "--set", f"data.source=folder:{folder}", "--set", "data.strict=true",
            "--out", str(tmp_path / "out")], capsys, "contains NaN or inf pixels")


def test_empty_and_missing_folders(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _fails(["run", "--set", f"data.source=folder:{tmp_path / 'empty'}", "--out",
            str(tmp_path / "o")], capsys, "is empty")
    _fails(["run", "--set", f"data.source=folder:{tmp_path / 'nowhere'}", "--out",
            str(tmp_path / "o")], capsys, "does not exist")
    assert not (tmp_path / "o").exists()


def test_empty_class_folder(tmp_path, rng, capsys):
    _write_images(tmp_path / "d" / "head", rng, ["1.png", "2.png"])
    (tmp_path / "d" / "femur").mkdir()
    _fails(["run", "--set", f"data.source=folder:{tmp_path / 'd'}", "--out",
            str(tmp_path / "o")], capsys, "class 'femur' has no readable images")


def test_bad_yaml_unknown_and_ill_typed_keys(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epocs: 3\n")
    _fails(["run", str(path), "--out", str(tmp_path / "o")], capsys, "unknown key train.epocs")
    path.write_text("train:\n  epochs: three\n")
    _fails(["run", str(path), "--out", str(tmp_path / "o")], capsys,
           "train.epochs must be int")
    path.write_text("train: [1, 2\n")
    _fails(["run", str(path), "--out", str(tmp_path / "o")], capsys, "not valid YAML")
    _fails(["run", str(tmp_path / "none.yaml")], capsys, "does not exist")
    _fails(["run", "--set", "train.epochs", "--out", str(tmp_path / "o")], capsys,
           "must look like key=value")
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    assert cli.main(["train", *TINY, "--set", "data.n_images=8", "--out", str(out)]) == 0
    return out / "models" / "small_cnn"


def test_checkpoint_of_another_model_or_shape(trained, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    meta = json.loads((other / "model.json").read_text())
    meta["model"] = "vgg16"
    (other / "model.json").write_text(json.dumps(meta))
    _fails(["attribute", *TINY, "--set", "data.n_images=8", "--checkpoint", str(other),
            "--out", str(tmp_path / "a")], capsys, "vgg16 reduces 12x12 images to nothing")
    meta.update(model="small_cnn", hidden=16)  # same model, other layer sizes
    (other / "model.json").write_text(json.dumps(meta))
    _fails(["attribute", *TINY, "--set", "data.n_images=8", "--checkpoint", str(other),
            "--out", str(tmp_path / "a")], capsys, "does not fit model 'small_cnn'")
    _fails(["sweep", "--set", "data.image_size=16", "--set", "data.n_images=8",
            "--checkpoint", str(trained), "--out", str(tmp_path / "s")], capsys,
           "takes images of shape [12, 12, 1]")
    _fails(["attribute", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "a")], capsys,
           "holds no trained model")
    assert not (tmp_path / "a").exists() and not (tmp_path / "s").exists()


def test_unwritable_output(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _fails(["run", *TINY, "--out", str(blocker / "sub")], capsys, "pass a folder path")
    import os

    real = os.makedirs

    def denied(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(os, "makedirs", denied)
    _fails(["run", *TINY, "--out", str(tmp_path / "ro")], capsys, "permission denied")
    monkeypatch.setattr(os, "makedirs", real)
