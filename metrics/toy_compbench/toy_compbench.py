"""Toy CompBench as an ``evaluate`` metric: ``evaluate.load("metrics/toy_compbench")``.

The scorer is diffusers_pixart.toy.compbench."""

import datasets
import evaluate

from diffusers_pixart.toy.compbench import mean_scores, score_image

_DESCRIPTION = """The T2I-CompBench analogue of the toy world: colour, shape (bound to colour), spatial (regions and
relations) and count scores of each image against its prompt, read off the pixels with no learned weights, and
their mean (overall). Prompts must be in the toy grammar (diffusers_pixart.toy.parse_prompt)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: generated images (PIL, RGB, at least 16x16).
    references: their prompts (str, toy grammar).
Returns:
    color, shape, spatial, count, overall: mean scores in [0, 1] (spatial over the prompts that place objects).
Example:
    >>> metric = evaluate.load("metrics/toy_compbench")
    >>> metric.compute(predictions=images, references=prompts)
"""


class ToyCompBench(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Huang et al., T2I-CompBench, NeurIPS 2023 (the benchmark this one imitates).",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Image(), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        return mean_scores([score_image(image, prompt) for image, prompt in zip(predictions, references)])
