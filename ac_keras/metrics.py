"""Streaming, host-side (NumPy) evaluation metrics for single-label and multi-label video classification.

The evaluation loop creates one accumulator with `make_metrics`, calls `update(labels, predictions)` once per
batch with NumPy arrays, and `result()` once at the end. Accumulators of several workers combine with
`merge`.

Definitions (N videos, C classes, scores `s[n, c]`):

- Ranking and ties: every ranking below is a stable descending sort by score (`np.argsort(-s,
  kind="stable")`): among equal scores the earlier item comes first, that is the lower class index inside
  one video, and the earlier video (in `update` order, then `merge` order) in pooled lists. The YouTube-8M
  starter code instead shuffles with a fixed seed before sorting; results differ only when scores tie.
- Average precision of a ranked list with `P` positives in total (`average_precision`):
  `AP = (1 / P) * sum over positives at 1-based rank i of (number of positives in ranks 1..i) / i`.
  `P` may exceed the positives present in the list (positives that were never retrieved add 0);
  `AP = 0` when `P = 0`, as in the starter code.
- Single-label: `top1` / `top5` accuracy (the label is among the first `min(top_k, C)` of the ranking), and
  `mean_class_accuracy`: mean over the classes that occur among the labels of each class's top-1 accuracy.
- Multi-label (YouTube-8M starter code, github.com/google/youtube-8m `eval_util.py`):
  - `gap` (GAP@20): the top 20 predictions of every video are pooled into one list of (score, is_positive)
    pairs, ranked, and AP is taken over it with `P` = the number of positive labels in the whole dataset.
  - `hit_at_1`: share of videos whose top-ranked class is one of its labels (a video without labels counts
    as a miss, as in the starter code).
  - `perr`: for a video with `k >= 1` labels, the precision of its top-k ranked classes; averaged over the
    videos that have at least one label. Videos without labels are skipped (PERR is undefined for k = 0);
    the starter code instead counts them as precision 0 in the average, so the two differ only on data
    with unlabeled videos (YouTube-8M has none).
  - `map`: mean over classes of AP over all N videos, classes without any positive label excluded. By
    default computed from per-class score histograms (memory independent of N), with a rigorous error
    bound reported as `map_error_bound`; `map_bins=None` computes it exactly (memory grows as N * C).
  - `map_top20`: the starter code's mAP: per class, AP over only the (video, class) pairs that made their
    video's top 20, with `P` = all positives of that class, averaged over all C classes (a class without
    positives contributes 0, `filter_empty_classes=False` as in the Model Garden YT-8M evaluator).
- Segments (YouTube-8M 2019, `segment_eval_inference.py`): `segment_map`, the mean over a submission's classes
  of the AP of its ranked segments restricted to the rated (segment, class) pairs, with `P` = the class's
  positive ratings (`segment_average_precisions`; docs/segments.md).
"""

import numpy as np

# Histogram counts are uint32: one video adds at most 1 to a bin of a class, so counts stay below 2**32 as
# long as fewer than 2**32 videos are accumulated.
_MAX_BINNED_VIDEOS = 2**32 - 1
# Rows of (classes, bins) histograms converted to int64 at a time when computing AP bounds.
_BOUND_CHUNK_ELEMENTS = 1 << 22


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; found {value!r}.")
    return int(value)


def _check_bins(value, name):
    if value is None:
        return None
    return _check_positive_int(value, name)


def _as_scores(predictions, num_classes):
    """Validates `predictions` as a finite float array of shape (batch, num_classes)."""
    scores = np.asarray(predictions)
    if scores.ndim != 2 or scores.shape[1] != num_classes:
        raise ValueError(f"`predictions` must have shape (batch, {num_classes}); found shape {scores.shape}.")
    if not (np.issubdtype(scores.dtype, np.number) or scores.dtype == np.bool_):
        raise ValueError(f"`predictions` must be numeric; found dtype {scores.dtype}.")
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    if not np.all(np.isfinite(scores)):
        raise ValueError("`predictions` must be finite; found NaN or infinite scores.")
    return scores


def _check_unit_interval(scores, what):
    low, high = float(scores.min()), float(scores.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"Histogram-binned {what} needs scores in [0, 1] (e.g. sigmoid outputs); found scores in "
            f"[{low}, {high}]. Pass {what}_bins=None for the exact computation."
        )


def _as_binary(labels, shape, name):
    """Validates a multi-hot array of the given shape with values in {0, 1}; returns it as bool."""
    values = np.asarray(labels)
    if values.shape != shape:
        raise ValueError(
            f"`{name}` must be multi-hot with shape {shape} (batch, num_classes) like `predictions`; "
            f"found shape {values.shape}."
        )
    if values.dtype == np.bool_:
        return values
    if not np.issubdtype(values.dtype, np.number) or not np.all((values == 0) | (values == 1)):
        raise ValueError(f"`{name}` must contain only 0 and 1.")
    return values.astype(bool)


def _top_k_indices(scores, k):
    """Class indices of the k highest scores of each row, in stable descending order.

    Equals `np.argsort(-scores, axis=1, kind="stable")[:, :k]` in O(batch * C) time rather than
    O(batch * C log C): scores above the k-th largest value are all kept, and among scores equal to it the
    lowest class indices fill the remaining places.

    Args:
        scores: float array (batch, C).
        k: int, 1 <= k <= C.

    Returns:
        int array (batch, k).
    """
    batch, num_classes = scores.shape
    if k >= num_classes:
        return np.argsort(-scores, axis=1, kind="stable")
    kth_largest = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]
    above = scores > kth_largest
    tied = scores == kth_largest
    still_needed = k - above.sum(axis=1, keepdims=True)
    # Usually only the k-th score itself ties; cap the ties only in rows that have too many.
    crowded = np.flatnonzero(tied.sum(axis=1) > still_needed[:, 0])
    if crowded.size:
        tied[crowded] &= np.cumsum(tied[crowded], axis=1) <= still_needed[crowded]
    selected = above | tied
    columns = np.nonzero(selected)[1].reshape(batch, k)  # increasing class index per row
    order = np.argsort(-np.take_along_axis(scores, columns, axis=1), axis=1, kind="stable")
    return np.take_along_axis(columns, order, axis=1)


def _grouped_precision_sums(groups, scores, positives, num_groups):
    """Per group, the sum over its positives of the precision at their rank within the group.

    Each group is ranked by a stable descending sort of its scores (ties keep the input order). Dividing a
    group's sum by its number of positives gives its average precision.

    Args:
        groups: int array (M,) with values in [0, num_groups).
        scores: float array (M,).
        positives: bool array (M,).
        num_groups: int.

    Returns:
        float64 array (num_groups,).
    """
    order = np.argsort(-scores, kind="stable")
    order = order[np.argsort(groups[order], kind="stable")]
    sorted_groups = groups[order]
    sorted_positives = positives[order]
    group_starts = np.searchsorted(sorted_groups, np.arange(num_groups))
    start_of_own_group = group_starts[sorted_groups]
    ranks = np.arange(sorted_groups.size) - start_of_own_group + 1
    running_positives = np.cumsum(sorted_positives)
    positives_before_group = (running_positives - sorted_positives)[start_of_own_group]
    precisions = (running_positives - positives_before_group) / ranks
    return np.bincount(
        sorted_groups[sorted_positives], weights=precisions[sorted_positives], minlength=num_groups
    )


def _binned_precision_sum_bounds(positive_counts, negative_counts):
    """Lower and upper bounds of each row's sum of precisions from score histograms.

    Bins are ordered by increasing score, so an item in a higher bin has a strictly higher score than any
    item in a lower bin; only the order inside a bin is unknown. Moving a positive ahead of a negative
    raises its precision and changes no other positive's, so the sum is largest when every bin lists its
    positives first and smallest when it lists them last. For a bin holding p positives and n negatives,
    preceded by R items of which Q are positive, its j-th positive (j = 1..p) has precision between
    (Q + j) / (R + n + j) and (Q + j) / (R + j). The exact value for any tie-breaking lies in the interval.

    Args:
        positive_counts: int array (rows, bins): positives per score bin.
        negative_counts: int array (rows, bins): negatives per score bin.

    Returns:
        (lower, upper), float64 arrays (rows,).
    """
    num_rows, num_bins = positive_counts.shape
    lower = np.zeros(num_rows)
    upper = np.zeros(num_rows)
    chunk_rows = max(1, _BOUND_CHUNK_ELEMENTS // num_bins)
    for first in range(0, num_rows, chunk_rows):
        # Highest scores first.
        positive = positive_counts[first : first + chunk_rows, ::-1].astype(np.int64)
        negative = negative_counts[first : first + chunk_rows, ::-1].astype(np.int64)
        total = positive + negative
        items_before = np.cumsum(total, axis=1) - total
        positives_before = np.cumsum(positive, axis=1) - positive
        rows, columns = np.nonzero(positive)
        per_bin = positive[rows, columns]
        owner = np.repeat(np.arange(per_bin.size), per_bin)  # bin entry of each positive
        index_in_bin = np.arange(owner.size) - np.repeat(np.cumsum(per_bin) - per_bin, per_bin) + 1
        hits = positives_before[rows, columns][owner] + index_in_bin
        rank_if_first = items_before[rows, columns][owner] + index_in_bin
        rank_if_last = rank_if_first + negative[rows, columns][owner]
        row_of_positive = rows[owner]
        size = positive.shape[0]
        upper[first : first + size] = np.bincount(
            row_of_positive, weights=hits / rank_if_first, minlength=size
        )
        lower[first : first + size] = np.bincount(
            row_of_positive, weights=hits / rank_if_last, minlength=size
        )
    return lower, upper


def _score_bins(scores, num_bins):
    """Bin index in [0, num_bins) of each score in [0, 1]: floor(score * num_bins), 1.0 in the last bin."""
    bins = (scores.astype(np.float64) * num_bins).astype(np.int64)
    return np.minimum(bins, num_bins - 1)


def average_precision(scores, positives, num_positives=None):
    """Non-interpolated average precision of a scored list: the definition behind `gap` and `map`.

    The list is ranked by a stable descending sort of `scores` (equal scores keep their input order), and

        AP = (1 / num_positives) * sum over positives at 1-based rank i of (positives in ranks 1..i) / i.

    Args:
        scores: array-like (M,) of finite scores.
        positives: array-like (M,); an entry greater than 0 (or True) marks a positive.
        num_positives: int or None, the number of positives of the whole population the list was drawn
            from (e.g. all labels of the dataset, when the list holds only each video's top 20). Must be at
            least the number of positives in the list. Defaults to None: the positives in the list.

    Returns:
        float in [0, 1]; 0.0 when `num_positives` is 0 (as in the YouTube-8M starter code).

    Raises:
        ValueError: `scores` and `positives` are not 1-D of equal length, `scores` are not finite, or
            `num_positives` is negative or smaller than the positives in the list.
    """
    scores = np.asarray(scores)
    is_positive = np.asarray(positives) > 0
    if scores.ndim != 1 or is_positive.shape != scores.shape:
        raise ValueError(
            "`scores` and `positives` must be 1-D arrays of equal length; found shapes "
            f"{scores.shape} and {is_positive.shape}."
        )
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    if not np.all(np.isfinite(scores)):
        raise ValueError("`scores` must be finite; found NaN or infinite scores.")
    listed_positives = int(is_positive.sum())
    if num_positives is None:
        num_positives = listed_positives
    if num_positives < listed_positives:
        raise ValueError(
            f"`num_positives` ({num_positives}) must be at least the number of positives in the list "
            f"({listed_positives})."
        )
    if num_positives == 0:
        return 0.0
    sorted_positives = is_positive[np.argsort(-scores, kind="stable")]
    hits = np.cumsum(sorted_positives)[sorted_positives]
    ranks = np.flatnonzero(sorted_positives) + 1
    return float(np.sum(hits / ranks) / num_positives)


class SingleLabelMetrics:
    """Streaming top-1, top-k and mean class accuracy for single-label classification.

    Ranking: a class's rank is the number of classes with a higher score plus the number of classes with
    an equal score and a lower class index (a stable descending sort), so on ties the lower class index
    wins. Memory: two counters per class, independent of the number of examples.

    Args:
        num_classes: int, number of classes C.
        top_k: int, the k of top-k accuracy; k = min(top_k, C) is used, the result key stays
            `f"top{top_k}"`. Defaults to 5.

    Example:
        >>> metrics = SingleLabelMetrics(num_classes=3)
        >>> metrics.update(np.array([2, 0]), np.array([[0.1, 0.2, 0.7], [0.3, 0.6, 0.1]]))
        >>> metrics.result()
        {'top1': 0.5, 'top5': 1.0, 'mean_class_accuracy': 0.5}
    """

    def __init__(self, num_classes, top_k=5):
        self.num_classes = _check_positive_int(num_classes, "num_classes")
        self.top_k = _check_positive_int(top_k, "top_k")
        self.reset()

    def reset(self):
        """Forgets everything accumulated."""
        self.num_examples = 0
        self._top1_hits = 0
        self._top_k_hits = 0
        self._class_counts = np.zeros(self.num_classes, dtype=np.int64)
        self._class_correct = np.zeros(self.num_classes, dtype=np.int64)

    def _class_ids(self, labels, batch):
        values = np.asarray(labels)
        if values.ndim == 2:
            if values.shape != (batch, self.num_classes):
                raise ValueError(
                    f"One-hot `labels` must have shape ({batch}, {self.num_classes}) like "
                    f"`predictions`; found shape {values.shape}."
                )
            if not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_) or not (
                np.all((values == 0) | (values == 1)) and np.all(values.sum(axis=1) == 1)
            ):
                raise ValueError("One-hot `labels` must have exactly one 1 per row and 0 elsewhere.")
            return np.argmax(values, axis=1)
        if values.ndim == 1:
            if values.shape != (batch,):
                raise ValueError(
                    f"Class-id `labels` must have shape ({batch},) like `predictions`; found shape "
                    f"{values.shape}."
                )
            if not np.issubdtype(values.dtype, np.integer):
                raise ValueError(f"Class-id `labels` must be integers; found dtype {values.dtype}.")
            if values.size and (values.min() < 0 or values.max() >= self.num_classes):
                raise ValueError(
                    f"Class-id `labels` must lie in [0, {self.num_classes}); found values in "
                    f"[{values.min()}, {values.max()}]."
                )
            return values.astype(np.int64)
        raise ValueError(
            f"`labels` must be class ids of shape ({batch},) or one-hot of shape "
            f"({batch}, {self.num_classes}); found shape {values.shape}."
        )

    def update(self, labels, predictions):
        """Accumulates one batch.

        Args:
            labels: int class ids (batch,), or one-hot (batch, C) of any numeric dtype.
            predictions: scores (batch, C): logits or probabilities (only their order matters).

        Raises:
            ValueError: shapes do not match, labels are not valid class ids / one-hot, or scores are not
                finite.
        """
        scores = _as_scores(predictions, self.num_classes)
        class_ids = self._class_ids(labels, scores.shape[0])
        label_scores = np.take_along_axis(scores, class_ids[:, None], axis=1)
        lower_index = np.arange(self.num_classes) < class_ids[:, None]
        ranks = np.sum(scores > label_scores, axis=1) + np.sum((scores == label_scores) & lower_index, axis=1)
        correct = ranks == 0
        self.num_examples += class_ids.size
        self._top1_hits += int(correct.sum())
        self._top_k_hits += int(np.sum(ranks < min(self.top_k, self.num_classes)))
        self._class_counts += np.bincount(class_ids, minlength=self.num_classes)
        self._class_correct += np.bincount(class_ids[correct], minlength=self.num_classes)

    def merge(self, other):
        """Adds the state of another accumulator (e.g. from another worker) to this one.

        Args:
            other: `SingleLabelMetrics` with the same `num_classes` and `top_k`.

        Raises:
            ValueError: `other` is of another type or configuration.
        """
        if not isinstance(other, SingleLabelMetrics) or (other.num_classes, other.top_k) != (
            self.num_classes,
            self.top_k,
        ):
            raise ValueError(
                f"Can only merge SingleLabelMetrics(num_classes={self.num_classes}, "
                f"top_k={self.top_k}); found {other!r}."
            )
        self.num_examples += other.num_examples
        self._top1_hits += other._top1_hits
        self._top_k_hits += other._top_k_hits
        self._class_counts += other._class_counts
        self._class_correct += other._class_correct

    def result(self):
        """Returns the metrics over everything accumulated.

        Returns:
            dict: `top1`, `f"top{top_k}"` and `mean_class_accuracy`, floats in [0, 1].

        Raises:
            RuntimeError: no example was accumulated.
        """
        if self.num_examples == 0:
            raise RuntimeError("No examples were accumulated; call update() before result().")
        present = self._class_counts > 0
        return {
            "top1": self._top1_hits / self.num_examples,
            f"top{self.top_k}": self._top_k_hits / self.num_examples,
            "mean_class_accuracy": float(np.mean(self._class_correct[present] / self._class_counts[present])),
        }

    def __repr__(self):
        return f"SingleLabelMetrics(num_classes={self.num_classes}, top_k={self.top_k})"


class MultiLabelMetrics:
    """Streaming GAP@20, Hit@1, PERR and mAP for multi-label classification (YouTube-8M definitions).

    See the module docstring for the definitions and the tie-breaking rule. Memory:

    - `hit_at_1`, `perr`: a few counters.
    - `gap` (exact, the default): each video's top-k scores, flags and class ids, as in the starter code:
      7 bytes per kept prediction for float32 scores and C < 65536 (140 MB per million videos at
      top_k=20), plus about 3x that temporarily in `result()` for the global sort.
      `gap_bins=B` instead keeps a 2 x B histogram of the pooled top-k scores; scores must then lie in
      [0, 1] and the value is approximate (see `gap_error_bound`).
    - `map` (default `map_bins=10000`): per class, histograms of positive and of all scores over
      `map_bins` equal bins of [0, 1]: 8 * C * map_bins bytes whatever the number of videos (309 MB for
      C = 3862 and 10,000 bins; lower `map_bins` for less), plus O(number of positive labels) temporary
      memory in `result()`. Scores must lie in [0, 1]. Only the order of a positive and a negative that
      share a bin is unknown; `result()` returns the midpoint of the exact lower and upper bounds of each
      class's AP over all such orders, so `|map - exact map| <= map_error_bound` (half the mean interval
      width), whatever the tie-breaking. `map_bins=None` stores every score and is exact (memory grows as
      N * C; for small datasets).
    - `map_top20`: reuses the exact GAP storage; not reported when `gap_bins` is set.

    Args:
        num_classes: int, number of classes C.
        top_k: int, predictions kept per video for `gap` and `map_top20`; min(top_k, C) is used.
            Defaults to 20.
        map_bins: int or None, score bins per class for `map`, or None for the exact computation.
            Defaults to 10000.
        gap_bins: int or None, score bins for an approximate `gap`, or None for the exact computation.
            Defaults to None.

    Example:
        >>> metrics = MultiLabelMetrics(num_classes=4, map_bins=None)
        >>> metrics.update(np.array([[1, 0, 0, 1]]), np.array([[0.9, 0.8, 0.1, 0.3]]))
        >>> metrics.result()["hit_at_1"]
        1.0
    """

    def __init__(self, num_classes, top_k=20, map_bins=10_000, gap_bins=None):
        self.num_classes = _check_positive_int(num_classes, "num_classes")
        self.top_k = _check_positive_int(top_k, "top_k")
        self.map_bins = _check_bins(map_bins, "map_bins")
        self.gap_bins = _check_bins(gap_bins, "gap_bins")
        self.reset()

    def _config(self):
        return (self.num_classes, self.top_k, self.map_bins, self.gap_bins)

    def reset(self):
        """Forgets everything accumulated."""
        self.num_examples = 0
        self._hits_at_1 = 0
        self._perr_sum = 0.0
        self._num_labeled_videos = 0
        self._class_positives = np.zeros(self.num_classes, dtype=np.int64)
        # Exact GAP / map_top20: per batch, the top-k (scores, is_positive, class ids), shape (batch, k).
        self._top_scores, self._top_positives, self._top_classes = [], [], []
        if self.gap_bins is not None:
            self._gap_all_counts = np.zeros(self.gap_bins, dtype=np.int64)
            self._gap_positive_counts = np.zeros(self.gap_bins, dtype=np.int64)
        if self.map_bins is None:
            self._all_scores, self._all_positives = [], []
        else:
            self._map_all_counts = np.zeros((self.num_classes, self.map_bins), dtype=np.uint32)
            self._map_positive_counts = np.zeros((self.num_classes, self.map_bins), dtype=np.uint32)

    def update(self, labels, predictions):
        """Accumulates one batch.

        Args:
            labels: multi-hot (batch, C) with values in {0, 1} (bool, int or float).
            predictions: scores (batch, C); in [0, 1] when `map_bins` or `gap_bins` is set.

        Raises:
            ValueError: shapes do not match, labels are not 0/1, scores are not finite, or scores fall
                outside [0, 1] in a histogram-binned mode.
            OverflowError: more than 2**32 - 1 videos in histogram-binned `map`.
        """
        scores = _as_scores(predictions, self.num_classes)
        positives = _as_binary(labels, scores.shape, "labels")
        batch = scores.shape[0]
        if batch == 0:
            return
        if self.map_bins is not None or self.gap_bins is not None:
            _check_unit_interval(scores, "map" if self.map_bins is not None else "gap")
        if self.map_bins is not None and self.num_examples + batch > _MAX_BINNED_VIDEOS:
            raise OverflowError(f"Histogram-binned map supports at most {_MAX_BINNED_VIDEOS} videos.")

        num_labels = positives.sum(axis=1)
        top_k = min(self.top_k, self.num_classes)
        depth = min(self.num_classes, max(top_k, int(num_labels.max())))
        top_classes = _top_k_indices(scores, depth)
        top_positives = np.take_along_axis(positives, top_classes, axis=1)

        self.num_examples += batch
        self._hits_at_1 += int(top_positives[:, 0].sum())
        labeled = num_labels > 0
        hits_within_k = np.take_along_axis(
            np.cumsum(top_positives[labeled], axis=1), num_labels[labeled, None] - 1, axis=1
        )[:, 0]
        self._perr_sum += float(np.sum(hits_within_k / num_labels[labeled]))
        self._num_labeled_videos += int(labeled.sum())
        self._class_positives += positives.sum(axis=0)

        top_classes = top_classes[:, :top_k]
        top_positives = top_positives[:, :top_k]
        top_scores = np.take_along_axis(scores, top_classes, axis=1)
        if self.gap_bins is None:
            self._top_scores.append(top_scores)
            self._top_positives.append(top_positives)
            self._top_classes.append(top_classes.astype(np.min_scalar_type(self.num_classes)))
        else:
            bins = _score_bins(top_scores, self.gap_bins)
            self._gap_all_counts += np.bincount(bins.ravel(), minlength=self.gap_bins)
            self._gap_positive_counts += np.bincount(bins[top_positives], minlength=self.gap_bins)

        if self.map_bins is None:
            self._all_scores.append(scores)
            self._all_positives.append(positives)
        else:
            flat_bins = _score_bins(scores, self.map_bins) + (np.arange(self.num_classes) * self.map_bins)
            # A uint32 increment keeps np.add.at on its fast path (a Python int takes a slow generic one).
            one = np.uint32(1)
            np.add.at(self._map_all_counts.reshape(-1), flat_bins.ravel(), one)
            np.add.at(self._map_positive_counts.reshape(-1), flat_bins[positives], one)

    def merge(self, other):
        """Adds the state of another accumulator (e.g. from another worker) to this one.

        Pooled lists keep this accumulator's entries before `other`'s, which matters only for ties.

        Args:
            other: `MultiLabelMetrics` with the same `num_classes`, `top_k`, `map_bins`, `gap_bins`.

        Raises:
            ValueError: `other` is of another type or configuration.
        """
        if not isinstance(other, MultiLabelMetrics) or other._config() != self._config():
            raise ValueError(f"Can only merge {self!r}; found {other!r}.")
        self.num_examples += other.num_examples
        self._hits_at_1 += other._hits_at_1
        self._perr_sum += other._perr_sum
        self._num_labeled_videos += other._num_labeled_videos
        self._class_positives += other._class_positives
        self._top_scores.extend(list(other._top_scores))
        self._top_positives.extend(list(other._top_positives))
        self._top_classes.extend(list(other._top_classes))
        if self.gap_bins is not None:
            self._gap_all_counts += other._gap_all_counts
            self._gap_positive_counts += other._gap_positive_counts
        if self.map_bins is None:
            self._all_scores.extend(list(other._all_scores))
            self._all_positives.extend(list(other._all_positives))
        else:
            self._map_all_counts += other._map_all_counts
            self._map_positive_counts += other._map_positive_counts

    def _gap(self):
        """Returns (gap, error bound or None)."""
        total_positives = int(self._class_positives.sum())
        if self.gap_bins is None:
            scores = np.concatenate([s.ravel() for s in self._top_scores])
            positives = np.concatenate([p.ravel() for p in self._top_positives])
            return average_precision(scores, positives, num_positives=total_positives), None
        if total_positives == 0:
            return 0.0, 0.0
        lower, upper = _binned_precision_sum_bounds(
            self._gap_positive_counts[None], (self._gap_all_counts - self._gap_positive_counts)[None]
        )
        return float(lower[0] + upper[0]) / (2 * total_positives), float(upper[0] - lower[0]) / (
            2 * total_positives
        )

    def _map_top20(self):
        classes = np.concatenate([c.ravel() for c in self._top_classes]).astype(np.int64)
        scores = np.concatenate([s.ravel() for s in self._top_scores])
        positives = np.concatenate([p.ravel() for p in self._top_positives])
        sums = _grouped_precision_sums(classes, scores, positives, self.num_classes)
        present = self._class_positives > 0
        average_precisions = np.zeros(self.num_classes)
        average_precisions[present] = sums[present] / self._class_positives[present]
        return float(np.mean(average_precisions))

    def _map(self):
        """Returns (map, error bound or None); NaN when no class has a positive label."""
        present = self._class_positives > 0
        if not np.any(present):
            return float("nan"), (None if self.map_bins is None else float("nan"))
        counts = self._class_positives[present]
        if self.map_bins is None:
            scores = np.concatenate(self._all_scores)[:, present]
            positives = np.concatenate(self._all_positives)[:, present]
            order = np.argsort(-scores, axis=0, kind="stable")
            sorted_positives = np.take_along_axis(positives, order, axis=0)
            ranks = np.arange(1, scores.shape[0] + 1)[:, None]
            precision_sums = np.sum(
                np.where(sorted_positives, np.cumsum(sorted_positives, axis=0) / ranks, 0.0), axis=0
            )
            return float(np.mean(precision_sums / counts)), None
        positive_counts = self._map_positive_counts[present]
        lower, upper = _binned_precision_sum_bounds(
            positive_counts, self._map_all_counts[present] - positive_counts
        )
        lower, upper = lower / counts, upper / counts
        return float(np.mean((lower + upper) / 2)), float(np.mean((upper - lower) / 2))

    def result(self):
        """Returns the metrics over everything accumulated.

        Returns:
            dict of floats: `gap`, `hit_at_1`, `perr` (NaN when no video has a label), `map` (NaN when no
            class has a positive), `map_top20` (unless `gap_bins` is set); `map_error_bound` when
            `map_bins` is set and `gap_error_bound` when `gap_bins` is set: the largest possible distance
            of the reported value from the exact one.

        Raises:
            RuntimeError: no video was accumulated.
        """
        if self.num_examples == 0:
            raise RuntimeError("No examples were accumulated; call update() before result().")
        gap, gap_error_bound = self._gap()
        mean_average_precision, map_error_bound = self._map()
        results = {
            "gap": gap,
            "hit_at_1": self._hits_at_1 / self.num_examples,
            "perr": (self._perr_sum / self._num_labeled_videos if self._num_labeled_videos else float("nan")),
            "map": mean_average_precision,
        }
        if self.gap_bins is None:
            results["map_top20"] = self._map_top20()
        else:
            results["gap_error_bound"] = gap_error_bound
        if self.map_bins is not None:
            results["map_error_bound"] = map_error_bound
        return results

    def __repr__(self):
        return (
            f"MultiLabelMetrics(num_classes={self.num_classes}, top_k={self.top_k}, "
            f"map_bins={self.map_bins}, gap_bins={self.gap_bins})"
        )


def top_k_indices(scores, k):
    """Column indices of the k highest scores of each row, best first; among equal scores the lower index
    first (`np.argsort(-scores, axis=1, kind="stable")[:, :k]` in O(rows * columns)).

    Args:
        scores: float array (rows, columns).
        k: int, 1 <= k <= columns.

    Returns:
        int array (rows, k).
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or not 1 <= k <= scores.shape[1]:
        raise ValueError(f"top_k_indices needs 2-D scores and 1 <= k <= columns; got {scores.shape}, k={k}.")
    return _top_k_indices(scores, k)


def segment_average_precisions(ranked, rated):
    """Per class, the average precision of a segment submission over the rated (segment, class) pairs.

    The YouTube-8M 2019 segment score (`segment_eval_inference.py` of the starter code): a class's submitted
    segments, best first, are kept only where the pair (segment, class) was rated, in their order; the kept
    list's AP is taken with `P` = all positive ratings of the class (rated segments the submission did not
    list add 0):

        AP_c = (1 / P_c) * sum over the positives at 1-based positions i of the kept list of hits(i) / i

    with hits(i) the number of positives at positions 1..i.

    (The starter gives the kept pairs the scores `(m - i + 1) / m` and hands them to its
    `average_precision_calculator`: distinct scores in list order, so the same AP.)

    Args:
        ranked: mapping class id -> sequence of segment ids ("video:start"), best first (a submission row).
        rated: mapping (segment id, class id) -> rating; a rating > 0 is a positive.

    Returns:
        dict class id -> AP, for the classes of `ranked` with at least one positive rating (the starter
        fails on a submitted class without one: its positive count is looked up and missing).
    """
    positives = {}
    by_class = {}
    for (segment, class_id), rating in rated.items():
        by_class.setdefault(class_id, {})[segment] = rating > 0
        if rating > 0:
            positives[class_id] = positives.get(class_id, 0) + 1
    precisions = {}
    for class_id, segments in ranked.items():
        count = positives.get(class_id, 0)
        if count == 0:
            continue
        ratings = by_class[class_id]
        hits = np.array([ratings[segment] for segment in segments if segment in ratings], bool)
        found = np.cumsum(hits)[hits]
        positions = np.flatnonzero(hits) + 1
        precisions[class_id] = float(np.sum(found / positions) / count)
    return precisions


def segment_mean_average_precision(ranked, rated):
    """The YouTube-8M 2019 segment score: the mean of `segment_average_precisions` over its classes.

    Args:
        ranked, rated: as in `segment_average_precisions`.

    Returns:
        dict: `segment_map` (NaN when no submitted class has a positive rating) and `segment_map_classes`,
        the number of classes averaged.
    """
    precisions = segment_average_precisions(ranked, rated)
    value = float(np.mean(list(precisions.values()))) if precisions else float("nan")
    return {"segment_map": value, "segment_map_classes": len(precisions)}


def make_metrics(label_mode, num_classes, **kwargs):
    """Creates the metric accumulator for a label mode.

    Args:
        label_mode: str, "single" (one class per video) or "multi" (multi-hot labels).
        num_classes: int, number of classes.
        **kwargs: further constructor arguments (`top_k`; `map_bins`, `gap_bins` for "multi").

    Returns:
        `SingleLabelMetrics` or `MultiLabelMetrics`.

    Raises:
        ValueError: `label_mode` is neither "single" nor "multi".
    """
    if label_mode == "single":
        return SingleLabelMetrics(num_classes, **kwargs)
    if label_mode == "multi":
        return MultiLabelMetrics(num_classes, **kwargs)
    raise ValueError(f'`label_mode` must be "single" or "multi"; found {label_mode!r}.')
