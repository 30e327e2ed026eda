"""Offline features: the shared encoders, extraction to shards, resuming, the feature loader, two real processes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from diffusers import PixArtAlphaPipeline
from launching import free_port, run_launch
from test_data_streaming import assert_same_batches, write_imagefolder

from diffusers_pixart.data.buckets import nearest_bucket
from diffusers_pixart.data.features import (
    FeatureLoader,
    encode_images,
    encode_prompts,
    extract_features,
    sample_latents,
)
from diffusers_pixart.data.streaming import ImageTextLoader, load_streaming_dataset
from diffusers_pixart.tiny import make_components

REPO = Path(__file__).resolve().parents[2]
SIZES = [(32, 32), (16, 64), (64, 16), (24, 36), (40, 30)] * 2


@pytest.fixture(scope="module")
def components():
    return make_components(seed=0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    write_imagefolder(root, sizes=SIZES)
    return root


def raw_loader(folder: Path, **kwargs) -> ImageTextLoader:
    options = dict(resolution=256, multi_scale=True, batch_size=2, min_size=8, shuffle_buffer_size=0, drop_last=False)
    options.update(kwargs)
    return ImageTextLoader(load_streaming_dataset(str(folder)), max_epochs=1, **options)


def test_encoders_match_diffusers_pipeline(components):
    pipe = PixArtAlphaPipeline(**components)
    prompts = ["a red circle", "two small blue squares above a tree in a painting"]
    expected_embeds, expected_mask, _, _ = pipe.encode_prompt(
        prompts, do_classifier_free_guidance=False, clean_caption=False, max_sequence_length=120
    )
    with torch.no_grad():
        embeds, mask = encode_prompts(components["tokenizer"], components["text_encoder"], prompts)
    assert embeds.shape == (2, 120, 32) and mask.shape == (2, 120) and mask.dtype == torch.long
    assert torch.equal(mask, expected_mask.long()) and mask[0].sum() == 4  # 3 words + end token
    torch.testing.assert_close(embeds, expected_embeds)

    vae = components["vae"]
    images = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        mean, std = encode_images(vae, images)
        posterior = vae.encode(images).latent_dist
    assert mean.shape == (2, 4, 4, 6)
    torch.testing.assert_close(mean, posterior.mean)
    torch.testing.assert_close(std, posterior.std)
    latents = sample_latents(mean, std, 0.5, shift_factor=0.1, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(latents, (mean + std * noise - 0.1) * 0.5)
    with pytest.raises(ValueError, match="list of strings"):
        encode_prompts(components["tokenizer"], components["text_encoder"], "a cat")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        encode_images(vae, images[0])


def test_extract_resume_and_load(folder, components, tmp_path):
    out = tmp_path / "features"
    encoders = dict(vae=components["vae"], tokenizer=components["tokenizer"], text_encoder=components["text_encoder"])
    first = extract_features(raw_loader(folder), out, dtype="float32", rows_per_shard=3, max_samples=5, **encoders)
    assert first == 6  # stops after the batch that reaches 5
    progress = json.loads((out / "progress-r000.json").read_text())
    assert progress["rows"] == 6 and progress["loader_state"]["position"] > 0
    total = extract_features(raw_loader(folder), out, dtype="float32", rows_per_shard=3, **encoders)
    assert total == len(SIZES)
    assert not list(out.glob(".tmp-*"))
    (out / ".tmp-data-r000-00009.parquet").write_bytes(b"cut short")  # a killed write's leftover is not read

    with pytest.raises(ValueError, match="dtype differ"):
        extract_features(raw_loader(folder), out, dtype="float16", **encoders)

    features = FeatureLoader(out, batch_size=1, shuffle_buffer_size=0, max_epochs=1)
    records = {batch["text"][0]: batch for batch in features}
    assert sorted(records) == sorted(f"image {i}" for i in range(len(SIZES)))  # every image once: resume repeated none

    # Each stored record equals a direct encoding of its image and caption.
    direct = {text: None for text in records}
    for batch in raw_loader(folder, batch_size=1):
        with torch.no_grad():
            mean, std = encode_images(components["vae"], batch["pixel_values"])
            embeds, mask = encode_prompts(components["tokenizer"], components["text_encoder"], batch["text"])
        direct[batch["text"][0]] = (mean, std, embeds, mask, batch)
    scale = components["vae"].config.scaling_factor
    for text, batch in records.items():
        mean, std, embeds, mask, raw = direct[text]
        height, width = SIZES[int(text.split()[1])]
        bucket = nearest_bucket(height, width, 256)
        assert batch["latents"].shape == (1, 4, bucket.height // 8, bucket.width // 8)
        assert (batch["latents"] / scale - mean).abs().le(6 * std + 1e-5).all()
        torch.testing.assert_close(batch["prompt_embeds"], embeds)
        assert torch.equal(batch["prompt_attention_mask"], mask)
        assert torch.equal(batch["resolution"], raw["resolution"])
        assert torch.equal(batch["aspect_ratio"], raw["aspect_ratio"])

    # Latent noise is drawn per record, seed and epoch: the same again, different in the next epoch.
    def latents(**kwargs):
        loader = FeatureLoader(out, batch_size=1, shuffle_buffer_size=0, **kwargs)
        return {b["text"][0]: b["latents"] for b in loader}

    again, epoch_two = latents(max_epochs=1), latents(max_epochs=2)
    assert all(torch.equal(again[t], records[t]["latents"]) for t in records)
    assert all(not torch.equal(epoch_two[t], records[t]["latents"]) for t in records)
    # Worker processes draw the same noise (per record and epoch) as this process.
    options = dict(batch_size=2, shuffle_buffer_size=4, max_epochs=2)
    assert_same_batches(list(FeatureLoader(out, num_workers=2, **options)), list(FeatureLoader(out, **options)))

    # Records are read in arrow batches that cross shards (3 rows each) and buckets: the same rows, in the same
    # order, as datasets' own row-by-row reading; shuffled, every record once per epoch whatever the read size.
    bulk = FeatureLoader(out, batch_size=1, shuffle_buffer_size=0)
    bulk.read_batch_size = 4
    rows = list(bulk.records())
    expected = list(load_streaming_dataset(str(out)).with_format("numpy"))
    assert len(rows) == len(expected) == len(SIZES)
    for row, want in zip(rows, expected):
        assert row.keys() == want.keys()
        for name, value in want.items():
            assert np.array_equal(np.asarray(row[name]), value), name

    def shuffled_texts(read_batch_size):
        loader = FeatureLoader(out, batch_size=1, shuffle_buffer_size=4, seed=3)
        loader.read_batch_size = read_batch_size
        return [row["text"] for row in loader.records()]

    assert shuffled_texts(4) == shuffled_texts(256)
    assert sorted(shuffled_texts(4)) == sorted(row["text"] for row in rows)
    assert shuffled_texts(4) != [row["text"] for row in rows]


def test_feature_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a features folder"):
        FeatureLoader(tmp_path, batch_size=1)


def test_two_processes_extract_disjoint_parts(folder, components, tmp_path):
    """``accelerate launch`` with two real CPU processes: the ranks write disjoint parts that cover the data."""
    model = tmp_path / "model"
    for name in ("vae", "text_encoder", "tokenizer"):
        components[name].save_pretrained(model / name)
    port = free_port()
    out = tmp_path / "features"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
        str(REPO / "examples" / "extract_features.py"),
        "--data", str(folder), "--model", str(model), "--output_dir", str(out), "--resolution", "256",
        "--multi_scale", "--min_size", "8", "--batch_size", "2", "--rows_per_shard", "4",
    ]  # fmt: skip
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    result = run_launch(command, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    parts = [
        list(
            datasets.load_dataset("parquet", data_files=sorted(map(str, out.glob(f"data-r00{rank}-*"))))["train"][
                "text"
            ]
        )
        for rank in range(2)
    ]
    assert parts[0] and parts[1] and set(parts[0]).isdisjoint(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(f"image {i}" for i in range(len(SIZES)))
    assert "skipped {'undecodable image': " in result.stdout
