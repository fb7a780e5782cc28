"""The paper's benchmarks: saliency detection, single-object discovery (CorLoc), VOC12 retrieval.

``metrics`` holds the authors' metrics (bit-exact with FOUND's evaluation code, quirks included)
and a wrapper of the standard pysodmetrics ones; ``datasets`` reads the official layouts;
``saliency``, ``discovery`` and ``retrieval`` run one benchmark each (see docs/evaluation.md).
"""
from .discovery import DiscoveryResult, box_ious, corloc, predicted_box
from .metrics import AuthorsMeter, AuthorsScores, authors_saliency_metrics

__all__ = [
    "AuthorsMeter",
    "AuthorsScores",
    "DiscoveryResult",
    "authors_saliency_metrics",
    "box_ious",
    "corloc",
    "predicted_box",
]
