"""FID as an ``evaluate`` metric: ``evaluate.load("metrics/fid")``. The math is diffusers_pixart.evaluation.fid."""

import datasets
import evaluate

from diffusers_pixart.evaluation import fid, load_inception

_DESCRIPTION = """Fréchet distance between the feature statistics of generated and reference images
(Heusel et al., 2017). With the TF-FID Inception network (a local TorchScript file) this is FID; any other feature
network gives the Fréchet distance in its feature space. The generated and reference sets may differ in count (two
images at least)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: generated images (PIL).
    reference_images: real images (PIL), any count >= 2.
    feature_extractor: callable, images (B, 3, H, W) float in [0, 1] -> features (B, D); or
    inception_path: path of the TF-FID Inception TorchScript file (inception-2015-12-05.pt).
    batch_size: images per forward pass (default 32).
    image_size: (height, width) to resize every image to, or None when the images already share one size.
Returns:
    fid: the Fréchet distance (float).
Example:
    >>> metric = evaluate.load("metrics/fid")
    >>> metric.compute(predictions=images, reference_images=real, inception_path="inception-2015-12-05.pt")
"""


class FID(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Heusel et al., GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Image()}),
        )

    def _compute(
        self,
        predictions,
        reference_images=None,
        feature_extractor=None,
        inception_path=None,
        batch_size=32,
        image_size=None,
    ):
        if reference_images is None:
            raise ValueError("FID needs `reference_images`.")
        if (feature_extractor is None) == (inception_path is None):
            raise ValueError("Pass exactly one of `feature_extractor` and `inception_path`.")
        extractor = feature_extractor if feature_extractor is not None else load_inception(inception_path)
        return {"fid": fid(predictions, reference_images, extractor, batch_size, image_size)}
