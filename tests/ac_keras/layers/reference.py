"""Plain NumPy versions of the paper's equations, one video at a time, for the layer tests."""

import numpy as np


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=0, keepdims=True))
    return shifted / shifted.sum(axis=0, keepdims=True)


def attention_weights(frames, weighting, params, num_units):
    """Weights `(num_units, L)` of one video's frames `(L, M)` (Eqs. 3, 4, 5)."""
    num_frames = frames.shape[0]
    if weighting == "average":
        return np.full((num_units, num_frames), 1.0 / num_frames)
    if weighting == "fc1":
        kernel, bias = params["kernel"], params["bias"]  # (M, N), (N,)
        return softmax(frames @ kernel + bias).T
    hidden_kernel, hidden_bias = params["hidden_kernel"], params["hidden_bias"]  # (M, N*H), (N*H,)
    kernel, bias = params["kernel"], params["bias"]  # (N, H), (N,)
    weights = np.zeros((num_units, num_frames))
    hidden_size = kernel.shape[1]
    for unit in range(num_units):
        columns = slice(unit * hidden_size, (unit + 1) * hidden_size)
        hidden = np.tanh(frames @ hidden_kernel[:, columns] + hidden_bias[columns])  # (L, H)
        weights[unit] = softmax(hidden @ kernel[unit] + bias[unit])
    return weights


def attention_unit(frames, weighting, params, num_units):
    """Eq. 2 for every unit: returns `(pooled (N, M), weights (N, L))`."""
    weights = attention_weights(frames, weighting, params, num_units)
    return weights @ frames, weights


def shift_normalize(pooled, alpha, beta):
    """Eq. 7: `(alpha_k v_k + beta_k) / (sqrt(N) ||alpha_k v_k + beta_k||)` for `pooled (N, M)`."""
    shifted = alpha[:, None] * pooled + beta[:, None]
    norms = np.linalg.norm(shifted, axis=1, keepdims=True)
    return shifted / (np.sqrt(pooled.shape[0]) * norms)


def attention_cluster(frames, weighting, params, num_units, shift, alpha=None, beta=None):
    """Eq. 6: the concatenated (unit-major) cluster output, length `N * M`."""
    pooled, _ = attention_unit(frames, weighting, params, num_units)
    if shift:
        pooled = shift_normalize(pooled, alpha, beta)
    return pooled.reshape(-1)
