"""FID, CLIP score and contact sheets in diffusers_pixart.evaluation, and the evaluate modules under metrics/."""

from pathlib import Path

import evaluate
import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

from diffusers_pixart.evaluation import (
    clip_scores,
    contact_sheet,
    extract_features,
    feature_statistics,
    fid,
    frechet_distance,
    images_to_tensor,
    load_inception,
)
from diffusers_pixart.toy import render, sample_prompts, score

METRICS = Path(__file__).resolve().parents[2] / "metrics"


def _random_images(n, seed, size=(24, 24), low=0, high=256):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(low, high, (*size, 3), dtype=np.uint8)) for _ in range(n)]


def _small_network(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.Tanh(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()
    ).eval()


def _mean_colour(images: torch.Tensor) -> torch.Tensor:
    return images.mean(dim=(2, 3))


def _scipy_frechet(mu1, sigma1, mu2, sigma2):
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * covmean)


@pytest.mark.parametrize("samples", [200, 6])  # full-rank and rank-deficient covariances of 12 features
def test_frechet_distance_matches_scipy_sqrtm(samples):
    rng = np.random.default_rng(samples)
    a = rng.normal(size=(samples, 12)) @ rng.normal(size=(12, 12))
    b = rng.normal(size=(samples, 12)) * 2 + 1
    stats_a, stats_b = feature_statistics(a), feature_statistics(b)
    assert np.allclose(stats_a[1], np.cov(a.T)) and np.allclose(stats_a[0], a.mean(0))
    expected = _scipy_frechet(*stats_a, *stats_b)
    assert frechet_distance(*stats_a, *stats_b) == pytest.approx(expected, rel=1e-6, abs=1e-6)
    # Zero up to round-off relative to the scale of the covariance.
    assert frechet_distance(*stats_a, *stats_a) == pytest.approx(0.0, abs=1e-6 * np.trace(stats_a[1]))


def test_fid_of_a_shift_is_the_squared_shift():
    images = _random_images(10, 0, low=40, high=200)
    brighter = [Image.fromarray(np.asarray(im) + np.uint8(10)) for im in images]
    assert fid(images, brighter, _mean_colour) == pytest.approx(3 * (10 / 255) ** 2, rel=1e-6)


def test_fid_batches_and_resizes_like_one_direct_pass():
    network = _small_network()
    generated = _random_images(7, 1)
    reference = _random_images(5, 2, size=(32, 20))
    result = fid(generated, reference, network, batch_size=3, image_size=(24, 24))
    with torch.no_grad():
        features = [network(images_to_tensor(s, (24, 24))).double().numpy() for s in (generated, reference)]
    expected = _scipy_frechet(features[0].mean(0), np.cov(features[0].T), features[1].mean(0), np.cov(features[1].T))
    assert result == pytest.approx(expected, rel=1e-5)
    assert fid(generated, generated, network) == pytest.approx(0.0, abs=1e-8)


def test_inception_loader_feeds_uint8_to_the_torchscript_network(tmp_path):
    class StandIn(torch.nn.Module):  # the interface of NVIDIA's inception-2015-12-05.pt
        def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            if images.dtype != torch.uint8 or not return_features:
                raise ValueError("expects uint8 images and return_features=True")
            return images.float().mean(dim=(2, 3))

    path = tmp_path / "inception.pt"
    torch.jit.script(StandIn()).save(str(path))
    images = _random_images(3, 3)
    features = extract_features(images, load_inception(path))
    assert np.allclose(features, [np.asarray(im).reshape(-1, 3).mean(0) for im in images])
    with pytest.raises(FileNotFoundError):
        load_inception(tmp_path / "missing.pt")


def test_fid_bad_input_gets_a_clear_error():
    images = _random_images(3, 4)
    with pytest.raises(ValueError, match="N >= 2"):
        fid(images[:1], images, _mean_colour)
    with pytest.raises(ValueError, match="`generated` is empty"):
        fid([], images, _mean_colour)
    with pytest.raises(ValueError, match="mode 'L'"):
        fid(images, [im.convert("L") for im in images], _mean_colour)
    with pytest.raises(ValueError, match="different sizes"):
        fid(images, images[:2] + _random_images(1, 5, size=(30, 24)), _mean_colour)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        fid(images, images, lambda x: x)
    with pytest.raises(ValueError, match="Mismatched statistics"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def _tiny_clip(seed=0):
    letters = "abcdefghijklmnopqrstuvwxyz.,"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in [*letters, *(c + "</w>" for c in letters)]:
        vocab[token] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=24,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        vision_config=dict(
            image_size=32,
            patch_size=8,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
        ),
        projection_dim=8,
    )
    torch.manual_seed(seed)
    return CLIPModel(config).eval(), CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def test_clip_score_matches_the_models_own_similarity():
    model, processor = _tiny_clip(seed=2)  # a seed whose random CLIP gives both signs of cosine
    images = _random_images(5, 6, size=(40, 48))
    prompts = ["a red circle", "a blue square", "star", "a green ring on the left", "two objects"]
    scores = clip_scores(images, prompts, model, processor, batch_size=2)
    with torch.no_grad():
        output = model(**processor(text=prompts, images=images, return_tensors="pt", padding=True))
        cosine = torch.diagonal(output.logits_per_image) / model.logit_scale.exp()
    assert np.allclose(scores, 100 * cosine.clamp(min=0).numpy(), atol=1e-4)
    assert scores.shape == (5,) and (scores > 0).any() and (scores == 0).any()
    long_prompt = [" ".join(["a large red circle"] * 10)]
    assert np.isfinite(clip_scores(images[:1], long_prompt, model, processor)).all()  # truncated to 24 tokens
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        clip_scores(images[:2], prompts[:1], model, processor)


def test_contact_sheet_places_images_in_a_grid():
    images = [Image.new("RGB", (10, 8), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    sheet = contact_sheet(images, padding=1)
    assert sheet.size == (2 * 10 + 3, 2 * 8 + 3)
    assert sheet.getpixel((1, 1)) == (255, 0, 0)
    assert sheet.getpixel((12, 1)) == (0, 255, 0)
    assert sheet.getpixel((1, 10)) == (0, 0, 255)
    assert sheet.getpixel((12, 10)) == (255, 255, 255)
    with pytest.raises(ValueError, match="No images"):
        contact_sheet([])


def test_evaluate_modules_load_offline_and_agree_with_the_library():
    generated, reference = _random_images(4, 7), _random_images(6, 8)
    fid_metric = evaluate.load(str(METRICS / "fid"))
    result = fid_metric.compute(predictions=generated, reference_images=reference, feature_extractor=_small_network())
    assert result["fid"] == pytest.approx(fid(generated, reference, _small_network()), rel=1e-9)
    with pytest.raises(ValueError, match="exactly one"):
        fid_metric.compute(predictions=generated, reference_images=reference)

    prompts = [p.text for p in sample_prompts(4, seed=2)]
    images = [render(p.meaning, 64) for p in sample_prompts(4, seed=2)]
    bench = evaluate.load(str(METRICS / "toy_compbench"))
    result = bench.compute(predictions=images, references=prompts[::-1])
    assert result == score(images, prompts[::-1])
    assert bench.compute(predictions=images, references=prompts)["overall"] == 1.0

    model, processor = _tiny_clip(seed=5)
    clip_metric = evaluate.load(str(METRICS / "clip_score"))
    result = clip_metric.compute(predictions=images, references=prompts, model=model, processor=processor)
    direct = clip_scores(images, prompts, model, processor)
    assert result["clip_score"] == pytest.approx(direct.mean(), abs=1e-5)
    assert np.allclose(result["clip_scores"], direct, atol=1e-5) and direct.min() > 0
