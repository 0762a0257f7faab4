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
