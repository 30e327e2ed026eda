"""diffusers' own PixArt fast tests, run unchanged with our classes in place of diffusers'.

diffusers' tests are not shipped with its wheel and are not copied here: point ``DIFFUSERS_TESTS_DIR`` at a copy of
the root of diffusers' repository holding its ``tests`` tree (``git archive <tag> tests | tar -x -C DIR``) at the
installed diffusers' version, with diffusers' test requirements (``parameterized``, ``requests-mock``) importable.
Without it the test is skipped.

The suite runs twice in subprocesses through the :mod:`diffusers_swap` plugin: once with diffusers' own classes (the
oracle) and once with ours. Every test that passes with diffusers' classes must pass with ours.

No test reaches the network. The two Hub repositories the tests read are replaced by stand-ins in an offline Hub
cache: ``hf-internal-testing/tiny-random-t5`` (a T5 encoder with a 32-wide hidden state and a word-level tokenizer)
and ``PixArt-alpha/PixArt-XL-2-1024-MS`` (only the transformer's config, as published). The tests that compare
images with slices recorded with the real tiny T5 then fail with diffusers' classes too, and so do not count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from diffusers_swap import SWAP_ENV

from diffusers_pixart.tiny import make_tokenizer

#: The environment variable naming the copy of diffusers' repository (its ``tests`` folder inside).
TESTS_DIR_ENV = "DIFFUSERS_TESTS_DIR"

#: diffusers' PixArt fast tests: the pipeline's and the transformer model's.
SUITE = ("tests/pipelines/pixart_alpha/test_pixart.py", "tests/models/transformers/test_models_pixart_transformer2d.py")

#: The ``transformer/config.json`` of PixArt-alpha/PixArt-XL-2-1024-MS (diffusers' legacy class name).
OFFICIAL_TRANSFORMER_CONFIG = {
    "_class_name": "Transformer2DModel",
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 72,
    "caption_channels": 4096,
    "cross_attention_dim": 1152,
    "double_self_attention": False,
    "dropout": 0.0,
    "in_channels": 4,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "norm_num_groups": 32,
    "norm_type": "ada_norm_single",
    "num_attention_heads": 16,
    "num_embeds_ada_norm": 1000,
    "num_layers": 28,
    "num_vector_embeds": None,
    "only_cross_attention": False,
    "out_channels": 8,
    "patch_size": 2,
    "sample_size": 128,
    "upcast_attention": False,
    "use_linear_projection": False,
}


def _cache_repo(cache: Path, repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in an offline Hub cache (``refs/main`` pointing at it)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


def make_standin_hub_cache(cache: Path) -> None:
    """Write the stand-in Hub repositories of diffusers' PixArt tests into the Hub cache folder ``cache``."""
    from transformers import T5Config

    t5 = _cache_repo(cache, "hf-internal-testing/tiny-random-t5")
    tokenizer = make_tokenizer()
    tokenizer.save_pretrained(t5)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=5, num_heads=4)
    config.relative_attention_num_buckets = 8
    config.save_pretrained(t5)

    pixart = _cache_repo(cache, "PixArt-alpha/PixArt-XL-2-1024-MS") / "transformer"
    pixart.mkdir()
    (pixart / "config.json").write_text(json.dumps(OFFICIAL_TRANSFORMER_CONFIG))


def run_suite(tests_dir: Path, work: Path, swap: bool) -> dict[str, str]:
    """Run :data:`SUITE` in ``tests_dir``; ``{test id: "passed" | "failed" | "skipped"}``."""
    report = work / f"report-{'ours' if swap else 'diffusers'}.xml"
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(work / "hub"),
        HF_HOME=str(work / "home"),
        **{SWAP_ENV: "1" if swap else "0"},
        PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[1]), env.get("PYTHONPATH")])),
    )
    command = [sys.executable, "-m", "pytest", "-p", "diffusers_swap", "-p", "no:cacheprovider", "-q"]
    command += ["-W", "ignore", f"--junitxml={report}", *SUITE]
    subprocess.run(command, cwd=tests_dir, env=env, capture_output=True, text=True, timeout=1800)
    if not report.exists():
        raise RuntimeError(f"diffusers' tests did not run in {tests_dir} (no report)")
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = outcome
    return outcomes


def test_diffusers_pixart_fast_tests_pass_with_our_classes(tmp_path):
    tests_dir = os.environ.get(TESTS_DIR_ENV)
    if not tests_dir:
        pytest.skip(f"set {TESTS_DIR_ENV} to a copy of diffusers' repository (its tests/ tree) to run its PixArt tests")
    tests_dir = Path(tests_dir)
    missing = [name for name in SUITE if not (tests_dir / name).is_file()]
    if missing:
        pytest.skip(f"{TESTS_DIR_ENV}={tests_dir} lacks {missing}")
    for module in ("parameterized", "requests_mock"):
        if subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode:
            pytest.skip(f"diffusers' tests need `{module}` (pip install {module.replace('_', '-')})")
    make_standin_hub_cache(tmp_path / "hub")

    theirs = run_suite(tests_dir, tmp_path, swap=False)
    ours = run_suite(tests_dir, tmp_path, swap=True)
    passing = sorted(name for name, outcome in theirs.items() if outcome == "passed")
    regressions = [name for name in passing if ours.get(name) != "passed"]
    print(
        f"diffusers' PixArt fast tests: {len(passing) - len(regressions)} of the {len(passing)} that pass with "
        f"diffusers' classes pass with ours; failing with diffusers' classes here too: "
        f"{sorted(name for name, outcome in theirs.items() if outcome == 'failed')}"
    )
    assert passing, "no test passed with diffusers' own classes: the environment is broken"
    assert not regressions, f"pass with diffusers' classes, not with ours: {regressions}"
