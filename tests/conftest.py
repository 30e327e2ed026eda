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
