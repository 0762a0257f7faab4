"""The command line: main job, listing, and errors."""

import csv
import os
import subprocess
import sys

from jaxrobust import cli, corruptions


def test_corruptions_listing(capsys):
    assert cli.main(["corruptions"]) == 0
    out = capsys.readouterr().out
    for name in corruptions.names():
        assert name in out


SMALL = ["--set", "data.n_images=12", "--set", "data.image_size=24", "--set", "train.epochs=1",
         "--set", "models=[{name: small_cnn, width: 0.25, hidden: 8}]"]


def test_run_trains_sweeps_and_reports(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    import errno

    import numpy as np

    def full(*a, **k):  # the disk fills up while the report is written
        raise OSError(errno.ENOSPC, "No space left on device", "per_image.npz")

    monkeypatch.setattr(np, "savez_compressed", full)
    assert cli.main(["run", *SMALL, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # progress lines, then the error
    assert "the disk is full" in err[-1] and err[-1].startswith("jaxrobust: error: ")
    assert sum("error" in line for line in err) == 1 and "Traceback" not in "\n".join(err)
    assert sorted(p.name for p in out.iterdir()) == ["drift_cells", "models", "run.json",
                                                      "sweep_cells"]
    monkeypatch.undo()
    assert cli.main(["run", *SMALL, "--out", str(out)]) == 0  # resumes the finished work
    log = capsys.readouterr().out
    assert "resuming small_cnn after epoch 1" in log and "chunks resumed" in log
    assert "attribution drift: 3 curves resumed" in log
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 120  # every (model, corruption, step) of the protocol
    for name in ("report.html", "summary.json", "accuracy_vs_level.png", "accuracy_vs_ssim.png",
                 "ssim_vs_level.png", "confusion.png", "per_image.npz",
                 "saliency_small_cnn.png", "drift.png", "drift.csv", "test_confusion.png",
                 "training.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "models" / "small_cnn" / "model.json").exists()
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # no temp leftovers
    # the report: what was run and the results table first, no raw JSON dump, every
    # figure embedded and decodable
    import base64
    import re

    page = (out / "report.html").read_text()
    assert page.index("What was run") < page.index("Results by model") < page.index("Figures")
    assert "small_cnn" in page and "parameters" in page and "jax " in page
    assert '"_protocol"' not in page and "<pre>{" not in page
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(images) >= 6
    assert all(base64.b64decode(b).startswith(b"\x89PNG") for b in images)
    assert "results by model:" in log
    # attributions from the trained checkpoint
    att = tmp_path / "att"
    assert cli.main(["attribute", *SMALL, "--checkpoint", str(out / "models" / "small_cnn"),
                     "--method", "ig", "--steps", "8", "--n", "3", "--out", str(att)]) == 0
    import numpy as np

    saved = np.load(att / "attributions.npz")
    assert saved["attributions"].shape == (3, 24, 24, 1)
    assert (att / "attributions.png").stat().st_size > 0
    page = (att / "report.html").read_text()
    assert "integrated gradients" in page and "What was run" in page
    assert "saliency" not in page.split("<h2>Config")[0].lower()  # labelled as computed
    # a sweep of the checkpoint writes its own report; bench times it, per image
    ckpt = str(out / "models" / "small_cnn")
    swp = tmp_path / "swp"
    assert cli.main(["sweep", *SMALL, "--checkpoint", ckpt, "--corruptions", "gaussian_noise",
                     "--out", str(swp)]) == 0
    for name in ("results.csv", "per_image.npz", "summary.json", "report.html",
                 "accuracy_vs_level.png"):
        assert (swp / name).stat().st_size > 0, name
    assert "Results by model" in (swp / "report.html").read_text()
    import json

    assert cli.main(["bench", *SMALL, "--checkpoint", ckpt, "--steps", "4", "8", "--images",
                     "2", "--corruption", "gaussian_noise", "--json",
                     str(tmp_path / "b.json")]) == 0
    timed = json.loads((tmp_path / "b.json").read_text())
    assert [r["steps"] for r in timed["ig"]] == [4, 8]
    assert all(r["ig_ms_per_image"] > 0 and r["floor_ms_per_image"] > 0 for r in timed["ig"])
    assert timed["sweep"]["image_levels_per_s"] > 0 and timed["images"] == 2
    # the folder stays whole: a rerun with another config stops at once, touching nothing
    import time

    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    start = time.perf_counter()
    assert cli.main(["run", *SMALL, "--set", "train.epochs=2", "--out", str(out)]) == 2
    assert time.perf_counter() - start < 30
    err = capsys.readouterr().err
    assert "train.epochs (1 -> 2)" in err and "--restart" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    start = time.perf_counter()  # a finished folder, same config: nothing to redo
    assert cli.main(["run", *SMALL, "--out", str(out)]) == 0
    assert time.perf_counter() - start < 15
    assert "nothing to do" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    from jaxrobust import config
    from jaxrobust.studies import folder

    cfg = config.load(None, SMALL[1::2] + ["train.epochs=2"])
    assert folder.claim_folder(cfg, str(out), restart=True, log=lambda s: None) is False
    assert list(out.iterdir()) == []


def test_kernels_demo_writes_the_protocol_table(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["kernels-demo", "--out", str(out)]) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    expected = sum(len(corruptions.seed_levels(n)) for n in corruptions.names("study"))
    assert len(rows) == expected == 120
    assert {r["corruption"] for r in rows} == set(corruptions.names("study"))
    first = [float(r["ssim"]) for r in rows if r["corruption"] == "median_blur"]
    assert first[0] == 1.0 and first[-1] < first[1]  # radius 0 is the identity
    assert (out / "gallery.png").stat().st_size > 0
    assert (out / "ssim_vs_level.png").stat().st_size > 0


def test_bad_config_and_kernels_demo_refuses_a_non_empty_folder(tmp_path, capsys):
    assert cli.main(["run", "--set", "train.epoch=3", "--out", str(tmp_path / "x")]) == 2
    assert "unknown key train.epoch" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    (tmp_path / "keep.txt").write_text("x")
    assert cli.main(["kernels-demo", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_console_script_exits_non_zero_on_bad_arguments():
    proc = subprocess.run([sys.executable, "-m", "jaxrobust.cli", "nothing"],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "invalid choice" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "jaxrobust.cli", "bench", "--images", "4",
                           "--no-such-option"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unrecognized arguments: --no-such-option" in proc.stderr


def test_compiled_programs_are_kept_in_the_user_cache_unless_told_not_to(tmp_path):
    # The console command keeps XLA programs in $XDG_CACHE_HOME/jaxrobust/xla (JAX's
    # persistent compilation cache) for the next run; --no-compile-cache keeps none.
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    argv = [sys.executable, "-m", "jaxrobust.cli", "corruptions", "--gallery", "sample",
            "--corruptions", "fog", "--severities", "3", "--size", "32", "-q"]
    for flag, home in (([], "kept"), (["--no-compile-cache"], "none")):
        env["XDG_CACHE_HOME"] = str(tmp_path / home)
        done = subprocess.run([*argv, *flag, "--out", str(tmp_path / f"{home}.png")],
                              env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert os.listdir(tmp_path / "kept" / "jaxrobust" / "xla")
    assert not (tmp_path / "none" / "jaxrobust").exists()


def test_corruptions_gallery(tmp_path, capsys):
    from skimage import io

    out = tmp_path / "g.png"
    assert cli.main(["corruptions", "--gallery", "sample", "--corruptions", "fog", "jpeg",
                     "--severities", "1", "4.5", "--size", "32", "--out", str(out)]) == 0
    picture = io.imread(out)
    assert picture.ndim == 3 and picture.shape[0] > 100  # two rows of three panels
    assert cli.main(["corruptions", "--gallery", str(tmp_path / "missing.png"),
                     "--out", str(tmp_path / "h.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "h.png").exists()
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    assert cli.main(["corruptions", "--gallery", str(text), "--out",
                     str(tmp_path / "i.png")]) == 2
    assert "unreadable" in capsys.readouterr().err


def test_version_configs_and_accurate_help(capsys):
    import pytest

    import jaxrobust

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"jaxrobust {jaxrobust.__version__}"
    assert cli.main(["configs"]) == 0
    listing = capsys.readouterr().out
    for name in ("demo", "digits_ig", "ultrasound_vgg16", "ultrasound_xception"):
        assert name in listing
    assert cli.main(["configs", "demo"]) == 0
    assert "source: phantom" in capsys.readouterr().out
    parser = cli.build_parser()
    sub = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse's own map
    assert "digits_ig" in sub["counterfactual"].format_help()
    assert "train on" not in sub["sweep"].format_help()
    assert "Integrated Gradients" in sub["attribute"].format_help()
    for name in ("run", "train", "sweep", "attribute", "counterfactual"):
        assert "--seed" in sub[name].format_help() and "--quiet" in sub[name].format_help()
    text = sub["bench"].format_help()
    assert "--checkpoint" in text and "--steps" in text and "floor" in text


def test_seed_and_names_checked_before_any_data(tmp_path, capsys, monkeypatch):
    from jaxrobust import data

    args = cli.build_parser().parse_args(["run", "--seed", "7", "--set", "train.epochs=2"])
    cfg = cli._config(args)
    assert cfg.seed == 7 and cfg.train.epochs == 2
    assert cli._config(cli.build_parser().parse_args(["counterfactual", "digits_ig"])).seed == 0

    def no_data(*a, **k):
        raise AssertionError("data loaded before the names were checked")

    monkeypatch.setattr(data, "load", no_data)
    for argv, words in ((["run", "--corruptions", "fogg"], "unknown corruption 'fogg'"),
                        (["run", "--set", "models.0.name=resnet"], "'resnet' is not a model"),
                        (["train", "--set", "data.source=ftp:x"], "not a data source"),
                        (["run", "--set", "data.image_size=32"], "at least 71x71"),
                        (["run", "--set", "models.0.preprocess=bgr"], "preprocess 'bgr'"),
                        (["run", "--set", "models.0.weights=/no/such.h5"],
                         "models.0.weights"),
                        (["counterfactual", "--set", "counterfactual.trials=0"],
                         "counterfactual.trials must be at least 1")):
        assert cli.main([*argv, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
        assert not (tmp_path / "x").exists()


def test_quiet_prints_nothing_and_a_pipe_gets_plain_progress_lines(tmp_path, capsys):
    argv = ["corruptions", "--gallery", "sample", "--corruptions", "fog", "--severities", "1",
            "--size", "32"]
    assert cli.main(["-q", *argv, "--out", str(tmp_path / "a.png")]) == 0
    assert capsys.readouterr() == ("", "")
    assert cli.main([*argv, "--quiet", "--out", str(tmp_path / "b.png")]) == 0  # after, too
    assert capsys.readouterr() == ("", "")
    assert cli.main([*argv, "--out", str(tmp_path / "c.png")]) == 0
    out, err = capsys.readouterr()
    assert "wrote" in out
    assert "gallery" in err and "1/1" in err and "\r" not in err  # stderr is not a terminal
