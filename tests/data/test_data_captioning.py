"""LLaVA auto-labelling with a tiny randomly initialised LLaVA built here: the captions are nonsense, the plumbing
(prompting, batching, skipping, writing, resuming) is what is tested."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import datasets
import pytest
import torch
from PIL import Image
from test_data_streaming import write_imagefolder
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from diffusers_pixart.data.captioning import DEFAULT_PROMPT, build_prompts, caption_images
from diffusers_pixart.tiny import DEFAULT_WORDS, make_tokenizer

REPO = Path(__file__).resolve().parents[2]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> {% else %}{{ part['text'] }}{% endif %}{% endfor %} {% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def make_llava(seed: int = 0) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A two-layer LLaVA (CLIP vision tower, Llama decoder) on 16px images, with a word-level tokenizer."""
    tokenizer = make_tokenizer(list(DEFAULT_WORDS) + DEFAULT_PROMPT.lower().split())
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tokenizer.padding_side = "left"
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=16, patch_size=8
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=4,
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config).eval(), processor


def load_script():
    spec = importlib.util.spec_from_file_location("caption_llava", REPO / "examples" / "caption_llava.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def read_shards(folder: Path) -> datasets.Dataset:
    return datasets.load_dataset("parquet", data_files=str(folder / "*.parquet"), split="train")


def test_prompts_and_batched_captions():
    model, processor = make_llava()
    prompts = build_prompts(processor, 2)
    assert prompts == [f"user: <image> {DEFAULT_PROMPT} assistant:"] * 2
    with_caption = build_prompts(processor, 1, "Describe it. Old caption: {caption}", ["a red cat"])
    assert "Old caption: a red cat" in with_caption[0]
    images = [Image.new("RGB", (20, 30), (255, 0, 0)), Image.new("RGB", (40, 24), (0, 0, 255))]
    batched = caption_images(model, processor, images, prompts, max_new_tokens=6)
    single = [caption_images(model, processor, [image], prompts[:1], max_new_tokens=6)[0] for image in images]
    assert batched == single and all(batched)  # left padding: a batch captions like one image at a time
    with pytest.raises(ValueError, match="placeholder"):
        build_prompts(processor, 1, DEFAULT_PROMPT, ["a cat"])
    with pytest.raises(ValueError, match="2 images and 1 prompts"):
        caption_images(model, processor, images, prompts[:1])


def test_caption_llava_script_writes_and_resumes(tmp_path):
    model, processor = make_llava()
    model.save_pretrained(tmp_path / "llava")
    processor.save_pretrained(tmp_path / "llava")
    source = tmp_path / "images"
    captions = write_imagefolder(source, sizes=[(24, 24), (20, 32), (32, 20), (24, 30), (30, 24)])
    out = tmp_path / "captioned"
    script = load_script()
    common = ["--data", str(source), "--model", str(tmp_path / "llava"), "--output_dir", str(out),
              "--batch_size", "2", "--max_new_tokens", "5", "--rows_per_shard", "2"]  # fmt: skip
    script.main(common + ["--max_samples", "2"])
    assert len(read_shards(out)) == 2
    script.main(common)  # resumes
    written = read_shards(out)
    # the 5 images and the 2 with a tiny image or an empty caption (the source's own columns are not filtered);
    # the 2 undecodable files are skipped
    assert sorted(written["text"]) == sorted(captions + ["tiny", "  "])
    assert set(written.column_names) == {"image", "text", "label", "llava_caption"}
    assert all(isinstance(caption, str) and caption for caption in written["llava_caption"])
    row = written[written["text"].index("image 1")]
    assert row["image"].size == (32, 20)  # embedded bytes, decoded back
    prompt = build_prompts(processor, 1)
    assert row["llava_caption"] == caption_images(model, processor, [row["image"]], prompt, max_new_tokens=5)[0]

    # The variant with the original caption in the prompt.
    script.main(common[:5] + [str(tmp_path / "with_caption"), *common[6:], "--with_original_caption", "text"])
    with_caption = read_shards(tmp_path / "with_caption")
    assert sorted(with_caption["text"]) == sorted(captions + ["tiny"])  # the empty caption is skipped now
