"""pytest plugin: run diffusers' own PixArt tests with our classes in place of diffusers'.

Loaded with ``python -m pytest -p diffusers_swap`` (this folder on ``PYTHONPATH``) in a copy of diffusers' ``tests``
tree; :mod:`test_diffusers_suite` does that. Before diffusers' test modules are imported it replaces
``diffusers.PixArtAlphaPipeline`` and ``diffusers.PixArtTransformer2DModel`` by ours, so that their unchanged
``from diffusers import PixArtAlphaPipeline, PixArtTransformer2DModel`` (and diffusers' own lookups by name, such as
the ``Transformer2DModel`` -> ``PixArtTransformer2DModel`` remapping) give our classes. With
``DIFFUSERS_SWAP=0`` nothing is replaced: the same run then measures diffusers' own classes, the oracle.

No test of diffusers' PixArt suite checks behaviour that we changed on purpose (our fixes are of paths it does not
test: see the pipeline module's docstring), so none is skipped here.
"""

from __future__ import annotations

import os

import pytest

#: Environment variable that turns the swap off (``0``), to run diffusers' own classes through the same tests.
SWAP_ENV = "DIFFUSERS_SWAP"


def swap_enabled() -> bool:
    """Whether this run replaces diffusers' PixArt classes by ours."""
    return os.environ.get(SWAP_ENV, "1") != "0"


def pytest_configure(config: pytest.Config) -> None:
    """Put our classes into diffusers' top-level namespace, before any test module imports them."""
    if not swap_enabled():
        return
    import diffusers

    from diffusers_pixart import PixArtAlphaPipeline, PixArtTransformer2DModel

    diffusers.PixArtAlphaPipeline = PixArtAlphaPipeline
    diffusers.PixArtTransformer2DModel = PixArtTransformer2DModel


def pytest_report_header(config: pytest.Config) -> str:
    """Say which classes the run tests."""
    if not swap_enabled():
        return "diffusers_swap: diffusers' own PixArt classes (oracle run)"
    return "diffusers_swap: diffusers_pixart's PixArtAlphaPipeline and PixArtTransformer2DModel swapped in"
