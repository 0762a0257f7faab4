"""Signature rules every public kernel keeps (as dm-pix's api_test does)."""

import inspect

import pytest

import jaxrobust
from jaxrobust import corruptions


@pytest.mark.parametrize("name", corruptions.names())
def test_kernel_signature(name):
    fn = corruptions.get(name).apply
    params = list(inspect.signature(fn).parameters.values())
    assert [p.name for p in params[:2]] == ["key", "image"]
    assert "rng" not in [p.name for p in params]
    assert params[2].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    for p in params[3:]:
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: {p.name} must be keyword-only"
    assert fn.__doc__ and "(H, W, C)" in fn.__doc__


@pytest.mark.parametrize("fn", [jaxrobust.ssim, jaxrobust.psnr])
def test_metric_options_are_keyword_only(fn):
    params = list(inspect.signature(fn).parameters.values())
    for p in params[2:]:
        assert p.kind is inspect.Parameter.KEYWORD_ONLY


def test_public_names_are_exported():
    for name in jaxrobust.__all__:
        assert hasattr(jaxrobust, name)
    for name in corruptions.__all__:
        assert hasattr(corruptions, name)


def _public_functions():
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(jaxrobust.__path__, "jaxrobust."):
        module = importlib.import_module(info.name)
        for name, fn in vars(module).items():
            if (not name.startswith("_") and inspect.isfunction(fn)
                    and fn.__module__ == module.__name__):
                yield f"{info.name}.{name}", fn


def test_key_comes_first_wherever_randomness_enters():
    # dm-pix / optax style: a PRNG key is the first argument of every public function
    # that takes one (kernels, attribution, counterfactual, sweep engine, studies).
    checked = 0
    for name, fn in _public_functions():
        params = list(inspect.signature(fn).parameters)
        if "key" in params:
            assert params[0] == "key", f"{name}: key must come first, got {params}"
            checked += 1
        assert "rng" not in params, f"{name}: call the PRNG key `key`"
    assert checked >= 15  # the walk found the functions it is meant to check


def test_the_package_imports_neither_torch_nor_captum():
    import subprocess
    import sys

    code = ("import importlib, pkgutil, sys, jaxrobust\n"
            "for m in pkgutil.walk_packages(jaxrobust.__path__, 'jaxrobust.'):\n"
            "    importlib.import_module(m.name)\n"
            "print(sorted(n for n in ('torch', 'captum', 'cv2', 'imagecorruptions')"
            " if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
