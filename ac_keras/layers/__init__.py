"""Attention-cluster layers (paper section 3)."""

from ac_keras.layers.attention import WEIGHTINGS, AttentionUnit
from ac_keras.layers.cluster import AttentionCluster
from ac_keras.layers.shift import ShiftNormalize, reference_shift_stddev

__all__ = [
    "WEIGHTINGS",
    "AttentionCluster",
    "AttentionUnit",
    "ShiftNormalize",
    "reference_shift_stddev",
]
