"""What a user who installs the package gets: a wheel, installed (not editable) into a
new virtual environment, runs the main job from an empty folder."""

import os
import shutil
import subprocess
import sys
import venv

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_wheel_installs_and_runs_the_main_job_from_an_empty_folder(tmp_path):
    # Build from a copy of the sources (no build/ or egg-info left in the checkout),
    # with the setuptools already installed (no download at test time).
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*cache", "benchmarks"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--quiet", "-w", str(tmp_path / "dist"), str(src)])
    (wheel,) = (tmp_path / "dist").glob("jaxrobust-*.whl")
    # A new environment; its dependencies come from this interpreter's site-packages,
    # jaxrobust itself only from the wheel.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", "--quiet", str(wheel)])
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    where = _run([str(python), "-c", "import jaxrobust; print(jaxrobust.__file__)"],
                 cwd=empty, env=env).stdout.strip()
    assert where.startswith(str(env_dir)), where  # the installed copy, not the checkout
    exe = str(env_dir / "bin" / "jaxrobust")
    assert _run([exe, "--version"], cwd=empty, env=env).stdout.startswith("jaxrobust ")
    listing = _run([exe, "configs"], cwd=empty, env=env).stdout
    for name in ("demo", "digits_ig", "ultrasound_vgg16", "ultrasound_xception"):
        assert name in listing
    assert str(env_dir) in listing  # shipped inside the installed package
    out = tmp_path / "run"
    # The shipped demo config, shrunk; two corruptions whose programs compile quickly
    # (the median's compile is the long one, and the in-process main-job test covers it).
    done = _run([exe, "run", "--quiet", "--set", "data.n_images=12", "--set",
                 "data.image_size=24", "--set", "train.epochs=1", "--set",
                 "models=[{name: small_cnn, width: 0.25, hidden: 8}]", "--corruptions",
                 "scale_up", "gaussian_noise", "--out", str(out)], cwd=empty, env=env)
    assert done.stdout == "" and done.stderr == ""  # --quiet: no log lines, no warnings
    for name in ("report.html", "results.csv", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    assert os.listdir(empty) == []  # nothing written to the working folder
