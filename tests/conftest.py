"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from hub_server import HubServer

# huggingface_hub reads HF_ENDPOINT and HF_HOME once, when it is imported. Point them at a loopback Hub and a throw-away
# home before any test module imports it: no test reaches the network or the user's cache and stored token.
_HUB_TOKENS = {"hf_alice_write": "alice", "hf_bob_write": "bob"}
_HUB_ROOT = tempfile.mkdtemp(prefix="pytest-hub-")
_HUB = HubServer(os.path.join(_HUB_ROOT, "server"), tokens=_HUB_TOKENS).start()
os.environ["HF_ENDPOINT"] = _HUB.url
os.environ["HF_HOME"] = os.path.join(_HUB_ROOT, "home")
os.environ.pop("HF_TOKEN", None)


def pytest_unconfigure(config):
    _HUB.stop()
    shutil.rmtree(_HUB_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def hub() -> HubServer:
    """The loopback Hub server (``tests/hub_server.py``); ``hub.tokens`` maps tokens to user names."""
    from huggingface_hub import constants

    if constants.ENDPOINT != _HUB.url:
        raise RuntimeError(f"huggingface_hub was imported before tests/conftest.py set HF_ENDPOINT={_HUB.url}")
    return _HUB


@pytest.fixture(scope="session")
def training_assets(tmp_path_factory):
    """Read-only inputs of the stage tests: a tiny pipeline folder (``base``) and 16 toy images at 32px (``toy``)."""
    from diffusers_pixart import tiny
    from diffusers_pixart.toy.world import make_dataset

    root = tmp_path_factory.mktemp("training-assets")
    tiny.make_pipeline().save_pretrained(root / "base")
    make_dataset(root / "toy", n=16, seed=0, resolution=32)
    return root
