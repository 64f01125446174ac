"""ac_keras: Attention Clusters (Long et al., CVPR 2018) for video classification in Keras 3."""

__version__ = "0.1.0"
