"""Attention-cluster layers (paper section 3) and the comparison aggregators (Table 4, appendix B)."""

from ac_keras.layers.aggregators import (
    AGGREGATORS,
    AverageAggregator,
    BiLSTMAggregator,
    FlattenAggregator,
    TemporalInceptionAggregator,
    TSLSTMAggregator,
)
from ac_keras.layers.attention import WEIGHTINGS, AttentionUnit
from ac_keras.layers.centering import FeatureCentering
from ac_keras.layers.cluster import AttentionCluster
from ac_keras.layers.dequantize import Dequantize
from ac_keras.layers.shift import ShiftNormalize, reference_shift_stddev

__all__ = [
    "AGGREGATORS",
    "WEIGHTINGS",
    "AttentionCluster",
    "AttentionUnit",
    "AverageAggregator",
    "BiLSTMAggregator",
    "Dequantize",
    "FeatureCentering",
    "FlattenAggregator",
    "ShiftNormalize",
    "TSLSTMAggregator",
    "TemporalInceptionAggregator",
    "reference_shift_stddev",
]
