"""CLIP score as an ``evaluate`` metric: ``evaluate.load("metrics/clip_score")``.

The math is diffusers_pixart.evaluation.clip_scores."""

import datasets
import evaluate

from diffusers_pixart.evaluation import clip_scores, load_clip

_DESCRIPTION = """CLIP score (Hessel et al., 2021, with weight 100): 100 * max(cosine(image, text), 0) between the CLIP
embeddings of each image and its prompt, averaged over the pairs."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: generated images (PIL).
    references: their prompts (str).
    model: a transformers CLIP model (then also pass `processor`), or a local folder or Hub id to load both from.
    processor: the CLIP processor matching `model` (text and images).
    batch_size: pairs per forward pass (default 32).
Returns:
    clip_score: the mean score; clip_scores: the score of each pair.
Example:
    >>> metric = evaluate.load("metrics/clip_score")
    >>> metric.compute(predictions=images, references=prompts, model="path/to/clip-vit-large-patch14")
"""


class ClipScore(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Hessel et al., CLIPScore: A Reference-free Evaluation Metric for Image Captioning, EMNLP 2021.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Image(), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, model=None, processor=None, batch_size=32):
        if model is None:
            raise ValueError("CLIP score needs a `model`: a CLIP model object, a local folder or a Hub id.")
        if isinstance(model, str):
            model, processor = load_clip(model)
        elif processor is None:
            raise ValueError("Pass the `processor` that goes with the CLIP model object.")
        scores = clip_scores(predictions, references, model, processor, batch_size)
        return {"clip_score": float(scores.mean()), "clip_scores": scores.tolist()}
