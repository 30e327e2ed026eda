"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hub_server import HubServer

# huggingface_hub reads HF_ENDPOINT and HF_HOME once, when it is imported. Point them at a loopback Hub and a throw-away
# home before any test module imports it: no test reaches the network or the user's cache and stored token.
_HUB_TOKENS = {"hf_alice_write": "alice", "hf_bob_write": "bob"}
_HUB_ROOT = tempfile.mkdtemp(prefix="pytest-hub-")
_HUB = HubServer(os.path.join(_HUB_ROOT, "server"), tokens=_HUB_TOKENS).start()
os.environ["HF_ENDPOINT"] = _HUB.url
os.environ["HF_HOME"] = os.path.join(_HUB_ROOT, "home")
os.environ.pop("HF_TOKEN", None)

# The toy experiments (the recipe, the customization examples) are modules of examples/toy, not of the package: their
# tests import them as the scripts beside them do, from that folder (``from recipe import run_recipe``).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "toy"))


#: The test modules whose assertions compare numbers across implementations, kernels or runs (parity with diffusers and
#: the original code, conversion, pipelines, training exactness): `.ci/run` runs them a second time with
#: ATEN_CPU_CAPABILITY=default, torch's portable kernels, as another CPU would run them (`pytest -m numeric`).
NUMERIC_MODULES = {
    "test_consistency",
    "test_controlnet",
    "test_controlnet_original",
    "test_conversion",
    "test_conversion_sigma",
    "test_data_features",
    "test_diffusers_dropin",
    "test_few_step",
    "test_kv_compression",
    "test_dreambooth",
    "test_lora",
    "test_performance",
    "test_pipeline",
    "test_pipeline_editing",
    "test_pipeline_sigma",
    "test_sigma_training",
    "test_training_controlnet",
    "test_training_diffusion",
    "test_training_engine",
    "test_training_stage1",
    "test_training_stage2",
    "test_training_stage3",
    "test_transformer",
}


def pytest_configure(config):
    config.addinivalue_line("markers", "numeric: compares numbers across implementations, kernels or runs")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rpartition(".")[2] in NUMERIC_MODULES:
            item.add_marker(pytest.mark.numeric)


def _bf16_cpu_attention_error() -> str | None:
    """torch's error for a bf16 attention product on this CPU's kernels, or None when it runs.

    torch's bf16 CPU flash attention packs its blocks with AVX-512 instructions and raises ("pack_vnni2 is only
    supported when avx512 is supported") under ATEN_CPU_CAPABILITY=default or avx2, from 64 tokens on.
    """
    query = torch.zeros(1, 1, 64, 8, dtype=torch.bfloat16)
    try:
        torch.nn.functional.scaled_dot_product_attention(query, query, query)
    except RuntimeError as error:
        return str(error)
    return None


@pytest.fixture(scope="session")
def bf16_cpu_attention() -> None:
    """Skips a test that runs bf16 attention on the CPU where torch's kernels for this CPU cannot."""
    error = _bf16_cpu_attention_error()
    if error is not None:
        pytest.skip(f"torch cannot run bf16 attention with these CPU kernels: {error}")


@pytest.fixture
def fresh_accelerate_state():
    """accelerate's process-wide state, reset before and after the test: accelerate keeps one mixed-precision setting
    per process, so a test that trains in bf16 in this process must neither meet another test's nor leave its own."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


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
