"""ControlNet training (examples/train_controlnet.py) on a tiny pipeline and toy-world data: the data path (Canny
edges of the batched images, ready control images, HED with random weights), a few steps with the base frozen and the
zero layers moving, the saved ControlNet in the pipeline, the Hub push, resume, and bad input before any step."""

from __future__ import annotations

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from huggingface_hub import HfApi, ModelCard

from diffusers_pixart import tiny
from diffusers_pixart.data.buckets import resize_and_center_crop
from diffusers_pixart.data.edges import HEDEdgeDetector, canny_edges, make_edge_detector
from diffusers_pixart.data.streaming import load_streaming_dataset
from diffusers_pixart.models.controlnet import PixArtControlNetModel
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.pipelines.pixart_alpha_controlnet import PixArtAlphaControlNetPipeline
from diffusers_pixart.toy import make_dataset
from diffusers_pixart.training import controlnet as training
from diffusers_pixart.training import engine
from diffusers_pixart.training import stages as training_stages
from diffusers_pixart.training.checkpoints import list_checkpoints
from diffusers_pixart.training.diffusion import IDDPMDiffusion

RESOLUTION = 32


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("controlnet")
    tiny.make_pipeline(num_layers=3).save_pretrained(root / "base")
    make_dataset(root / "toy", n=8)
    return root


def args(assets, out, *extra):
    return [
        "--pretrained_model_name_or_path", str(assets / "base"), "--train_data", str(assets / "toy"),
        "--output_dir", str(out), "--resolution", str(RESOLUTION), "--controlnet_layers", "2",
        "--train_batch_size", "2", "--learning_rate", "1e-3", "--lr_warmup_steps", "0", "--checkpointing_steps", "2",
        "--validation_steps", "0", "--report_to", "none", "--shuffle_buffer_size", "0", *extra,
    ]  # fmt: skip


def loader(dataset, **kwargs):
    return training.ControlImageTextLoader(
        dataset, resolution=RESOLUTION, batch_size=2, shuffle_buffer_size=0, caption_column="text", **kwargs
    )


def train_controlnet_on(config, pipe, data):
    """The ControlNet composition (captions and control images, the ControlNet copy, the IDDPM objective) on
    ``data``."""
    conditioning, parameters = training.ControlConditioning(config, pipe), training.ControlNetCopy(pipe)
    return engine.train(config, pipe, data, conditioning, parameters, IDDPMDiffusion.for_pipeline(pipe))


def test_control_maps_are_the_edges_of_the_batched_images(assets):
    batch = next(iter(loader(load_streaming_dataset(str(assets / "toy")), edge_detector=canny_edges)))
    files = sorted((assets / "toy").glob("**/*.png"))[:2]  # imagefolder's order, no shuffling
    for control, path in zip(batch["control_values"], files):
        image = resize_and_center_crop(PIL.Image.open(path).convert("RGB"), RESOLUTION, RESOLUTION)
        expected = torch.from_numpy(np.array(canny_edges(image))).float() / 255
        assert control.shape == (3, RESOLUTION, RESOLUTION)
        torch.testing.assert_close(control, expected.expand(3, -1, -1), rtol=0, atol=0)
    assert batch["control_values"].amax() == 1.0  # the toy shapes have edges


def test_controlnet_trains_with_a_frozen_base_saves_pushes_and_resumes(assets, tmp_path, monkeypatch, hub):
    runs = []  # (pipeline, result) of every run
    train = training_stages.train

    def recording_train(config, pipeline, *args, **kwargs):
        result = train(config, pipeline, *args, **kwargs)
        runs.append((pipeline, result))
        return result

    monkeypatch.setattr(training_stages, "train", recording_train)
    monkeypatch.setenv("HF_TOKEN", "hf_alice_write")
    out = tmp_path / "run"
    validation = [
        "--validation_steps",
        "2",
        "--validation_prompts",
        "a red circle",
        "--validation_inference_steps",
        "2",
    ]
    push = ["--push_to_hub", "--hub_model_id", "alice/toy-controlnet"]
    assert training.main_controlnet(args(assets, out, "--max_train_steps", "2", *validation, *push)) == 0

    base = PixArtAlphaPipeline.from_pretrained(assets / "base")
    trained, result = runs[0]
    frozen = trained.transformer.state_dict()
    for key, value in base.transformer.state_dict().items():  # the base is bit-identical
        assert torch.equal(frozen[key], value), key
    controlnet = PixArtControlNetModel.from_pretrained(out / "controlnet")
    assert controlnet.config.num_layers == 2
    for proj in (controlnet.before_proj, *controlnet.after_proj):  # the zero layers learned
        assert proj.weight.abs().max() > 0
    # What is saved is the EMA of the ControlNet's weights (the engine's default).
    for saved, shadow in zip(controlnet.parameters(), result.ema.shadow_params):
        assert torch.equal(saved, shadow)
    assert not torch.equal(controlnet.before_proj.weight, trained.controlnet.before_proj.weight)
    assert (out / "validation" / "step-0000002.png").is_file()

    # The saved ControlNet changes the base model's images.
    control = PIL.Image.open(sorted((assets / "toy").glob("**/*.png"))[0]).convert("RGB").resize((32, 32))
    call = dict(num_inference_steps=2, use_resolution_binning=False, output_type="np")
    pipe = PixArtAlphaControlNetPipeline(**base.components, controlnet=controlnet)
    controlled = pipe("a red circle", image=canny_edges(control), generator=torch.Generator().manual_seed(0), **call)
    plain = base("a red circle", height=32, width=32, generator=torch.Generator().manual_seed(0), **call)
    assert controlled.images.shape == plain.images.shape == (1, 32, 32, 3)
    assert np.abs(controlled.images - plain.images).max() > 1e-3

    files = set(HfApi().list_repo_files("alice/toy-controlnet"))
    assert {"README.md", "config.json", "diffusion_pytorch_model.safetensors", "images/sample_0.png"} <= files
    assert "controlnet" in ModelCard.load("alice/toy-controlnet").data.tags
    pulled = PixArtControlNetModel.from_pretrained("alice/toy-controlnet")
    assert torch.equal(pulled.before_proj.weight, controlnet.before_proj.weight)

    # Resume: the checkpoint's ControlNet and optimizer state continue for the one missing step.
    steps: list[int] = []  # the micro-steps trained
    generator = engine.step_generator
    monkeypatch.setattr(engine, "step_generator", lambda seed, m, acc: (steps.append(m), generator(seed, m, acc))[1])
    assert (
        training.main_controlnet(args(assets, out, "--max_train_steps", "3", "--resume_from_checkpoint", "latest")) == 0
    )
    assert steps == [2] and [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-2", "checkpoint-3"]
    straight = tmp_path / "straight"
    assert training.main_controlnet(args(assets, straight, "--max_train_steps", "3")) == 0
    (resumed, resumed_result), (uninterrupted, uninterrupted_result) = runs[1], runs[2]
    for a, b in zip(resumed.controlnet.parameters(), uninterrupted.controlnet.parameters()):
        torch.testing.assert_close(a, b)
    for a, b in zip(resumed_result.ema.shadow_params, uninterrupted_result.ema.shadow_params):
        torch.testing.assert_close(a, b)
    assert not torch.equal(resumed.controlnet.before_proj.weight, trained.controlnet.before_proj.weight)


def test_bad_input_is_refused_before_any_step(assets, tmp_path, capsys):
    cases = {
        "--image_column": (["--image_column", "picture"], "Column 'picture' is not in the dataset"),
        "--edge_detector": (["--edge_detector", "hed"], "HED edge detector needs its weights"),
        "--controlnet_layers": (["--controlnet_layers", "3"], "num_layers=3 block copies do not fit a base of 3"),
        "--features": (["--features", str(tmp_path)], "reads raw images"),
        "--validation_control_images": (["--validation_control_images", "absent.png"], "absent.png: no such file"),
    }
    for name, (extra, message) in cases.items():
        out = tmp_path / name.strip("-")
        assert training.main_controlnet(args(assets, out, "--max_train_steps", "1", *extra)) == 2, name
        assert message in capsys.readouterr().err, name
        assert not (out / "checkpoints").exists()

    # Ready control images must have the size of their image.
    image, small = PIL.Image.new("RGB", (40, 40), "red"), PIL.Image.new("RGB", (20, 40), "white")
    records = datasets.Dataset.from_dict({"image": [image] * 2, "text": ["a red square"] * 2, "edges": [small] * 2})
    records = records.cast_column("image", datasets.Image()).cast_column("edges", datasets.Image())
    with pytest.raises(ValueError, match=r"Record 0: the control image \('edges'\) is 40x20 .* its image is 40x40"):
        next(iter(loader(records.to_iterable_dataset(), conditioning_image_column="edges")))
    with pytest.raises(ValueError, match="Column 'sketch' is not in the dataset"):
        loader(records.to_iterable_dataset(), conditioning_image_column="sketch")

    # A batch whose control images do not match its images stops the trainer before its first step.
    config = training.ControlNetConfig(
        output_dir=str(tmp_path / "batch"), resolution=RESOLUTION, validation_steps=0, max_sequence_length=120
    )  # no base to take the family's length from
    base = tiny.make_pipeline(num_layers=3)
    pipe = PixArtAlphaControlNetPipeline(
        **base.components, controlnet=PixArtControlNetModel.from_transformer(base.transformer, num_layers=2)
    )
    batch = {"pixel_values": torch.zeros(1, 3, 32, 32), "text": ["a"], "control_values": torch.zeros(1, 3, 16, 16)}
    with pytest.raises(ValueError, match=r"control_values \(1, 3, 16, 16\) does not fit the batch"):
        train_controlnet_on(config, pipe, [batch])
    features = {"latents": torch.zeros(1, 4, 4, 4), "prompt_embeds": torch.zeros(1, 120, 32)}
    features |= {"prompt_attention_mask": torch.ones(1, 120), "control_values": torch.zeros(1, 3, 16, 16)}
    with pytest.raises(ValueError, match=r"\(1, 3, 32, 32\), expected"):  # latents 4x4 are 32x32 pixels
        train_controlnet_on(config, pipe, [features])
    PIL.Image.new("RGB", (40, 20), "white").save(tmp_path / "edges.png")
    control = training.load_control_image(tmp_path / "edges.png", RESOLUTION)
    assert control.shape == (3, RESOLUTION, RESOLUTION) and control.min() == control.max() == 1.0
    config.validation_prompts = ["a", "b"]
    with pytest.raises(ValueError, match="3 validation control images for 2 prompts"):
        training.ControlConditioning(config, pipe, validation_control_images=[control] * 3)
    with pytest.raises(ValueError, match=r"shapes \[\(3, 16, 16\)\]: \(3, 32, 32\) expected"):
        training.ControlConditioning(config, pipe, validation_control_images=[torch.zeros(3, 16, 16)])
    with pytest.raises(TypeError, match="needs a PixArtAlphaControlNetPipeline, got PixArtAlphaPipeline"):
        training.ControlNetCopy(base)
    assert not (tmp_path / "batch" / "checkpoints").exists()


def test_hed_has_the_annotator_layout_and_fuses_its_side_outputs(tmp_path):
    detector = HEDEdgeDetector()
    stages = {1: (3, 64, 2), 2: (64, 128, 2), 3: (128, 256, 3), 4: (256, 512, 3), 5: (512, 512, 3)}
    expected = {"norm": (1, 3, 1, 1)}  # ControlNetHED.pth of lllyasviel/Annotators
    for index, (cin, cout, convs) in stages.items():
        for j in range(convs):
            expected[f"block{index}.convs.{j}.weight"] = (cout, cin if j == 0 else cout, 3, 3)
            expected[f"block{index}.convs.{j}.bias"] = (cout,)
        expected[f"block{index}.projection.weight"], expected[f"block{index}.projection.bias"] = (1, cout, 1, 1), (1,)
    assert {k: tuple(v.shape) for k, v in detector.state_dict().items()} == expected

    # Side outputs with zero weights and biases b_i: the edge map is sigmoid(mean b_i) everywhere.
    biases = torch.tensor([-2.0, 1.0, 0.5, 3.0, -0.5])
    with torch.no_grad():
        for index, bias in enumerate(biases, start=1):
            projection = getattr(detector, f"block{index}").projection
            projection.weight.zero_()
            projection.bias.fill_(bias)
    torch.save(detector.state_dict(), tmp_path / "ControlNetHED.pth")
    hed = make_edge_detector("hed", hed_weights=tmp_path / "ControlNetHED.pth")
    edges = hed(PIL.Image.new("RGB", (36, 20), "blue"))
    assert edges.mode == "L" and edges.size == (36, 20)
    assert set(np.unique(np.asarray(edges)).tolist()) == {round(255 * torch.sigmoid(biases.mean()).item())}

    # Random weights: the map follows the image (plumbing of the annotator's RGB [0, 255] input).
    torch.manual_seed(0)
    random = HEDEdgeDetector()
    square = np.zeros((32, 32, 3), dtype=np.uint8)
    square[8:24, 8:24] = 255
    assert np.asarray(random.edge_map(PIL.Image.fromarray(square))).std() > 0

    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="missing .*block1.convs.0.bias"):
        HEDEdgeDetector.from_file(tmp_path / "other.pth")
    with pytest.raises(FileNotFoundError):
        make_edge_detector("hed", hed_weights=tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="Unknown edge detector 'sobel'"):
        make_edge_detector("sobel")
