"""Gradient attributions on a pure classifier `apply_fn(params, images) -> logits`.

`gradients`: saliency, gradient x input, SmoothGrad and Integrated Gradients (IG),
every one a gradient of weighted logits through one VJP path. `checks`: deletion /
insertion curves, attribution drift over corruption levels, and the parameter
randomisation sanity check. `streamed`: IG and drift over a whole data source, a
chunk at a time, resumable and split over devices and processes. Nothing here
imports Flax: any JAX model works.

Shapes: `images (N, H, W, C)`, `targets (N,)` int class indices; attributions have
the shape of `images`. Functions that draw random numbers take `key` first.

References:
    Simonyan et al., "Deep Inside Convolutional Networks", 2014 (saliency).
    Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017.
    Sundararajan et al., "Axiomatic Attribution for Deep Networks", 2017 (IG).
"""

from jaxrobust.attribution.checks import (
    attribution_drift,
    deletion_insertion,
    layer_order,
    parameter_randomization,
)
from jaxrobust.attribution.gradients import (
    METHODS,
    as_output_weights,
    auto_chunk,
    gradient_x_input,
    integrated_gradients,
    make_baseline,
    quadrature,
    saliency,
    smoothgrad,
    target_gradients,
    weighted_gradients,
)
from jaxrobust.attribution.streamed import (
    attribution_drift_source,
    integrated_gradients_source,
)

__all__ = [
    "METHODS",
    "as_output_weights",
    "attribution_drift",
    "attribution_drift_source",
    "auto_chunk",
    "deletion_insertion",
    "gradient_x_input",
    "integrated_gradients",
    "integrated_gradients_source",
    "layer_order",
    "make_baseline",
    "parameter_randomization",
    "quadrature",
    "saliency",
    "smoothgrad",
    "target_gradients",
    "weighted_gradients",
]
