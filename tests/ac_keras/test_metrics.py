import math

import numpy as np
import pytest

from ac_keras.metrics import (
    MultiLabelMetrics,
    SingleLabelMetrics,
    _top_k_indices,
    average_precision,
    make_metrics,
)

# ----------------------------------------------------------------------------------------------------------
# Plain-Python references of the definitions (Python's sorted() is stable, like the implementation).


def ranking(row):
    """Class indices by descending score; ties keep the lower index first."""
    return sorted(range(len(row)), key=lambda c: -row[c])


def reference_ap(scores, positives, num_positives=None, key=None):
    if num_positives is None:
        num_positives = sum(bool(p) for p in positives)
    if num_positives == 0:
        return 0.0
    order = sorted(range(len(scores)), key=key or (lambda i: -scores[i]))
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if positives[i]:
            hits += 1
            total += hits / rank
    return total / num_positives


def reference_single(class_ids, scores, top_k=5):
    num_classes = scores.shape[1]
    k = min(top_k, num_classes)
    top1 = [ranking(row)[0] == y for row, y in zip(scores, class_ids, strict=True)]
    topk = [y in ranking(row)[:k] for row, y in zip(scores, class_ids, strict=True)]
    per_class = [
        np.mean([hit for hit, y in zip(top1, class_ids, strict=True) if y == c])
        for c in range(num_classes)
        if c in set(class_ids.tolist())
    ]
    return {
        "top1": np.mean(top1),
        f"top{top_k}": np.mean(topk),
        "mean_class_accuracy": np.mean(per_class),
    }


def reference_multi(labels, scores, top_k=20):
    num_videos, num_classes = scores.shape
    k = min(top_k, num_classes)
    rankings = [ranking(row) for row in scores]
    hit_at_1 = np.mean([labels[n, rankings[n][0]] for n in range(num_videos)])
    precisions = []
    for n in range(num_videos):
        num_labels = int(labels[n].sum())
        if num_labels:  # videos without labels are skipped
            precisions.append(sum(labels[n, c] for c in rankings[n][:num_labels]) / num_labels)
    pool = [(scores[n, c], labels[n, c]) for n in range(num_videos) for c in rankings[n][:k]]
    gap = reference_ap([s for s, _ in pool], [p for _, p in pool], int(labels.sum()))
    class_aps = [reference_ap(scores[:, c], labels[:, c]) for c in range(num_classes) if labels[:, c].any()]
    top_aps = []
    for c in range(num_classes):
        candidates = [n for n in range(num_videos) if c in rankings[n][:k]]
        top_aps.append(reference_ap(scores[candidates, c], labels[candidates, c], int(labels[:, c].sum())))
    return {
        "gap": gap,
        "hit_at_1": hit_at_1,
        "perr": np.mean(precisions) if precisions else math.nan,
        "map": np.mean(class_aps) if class_aps else math.nan,
        "map_top20": np.mean(top_aps),
    }


def reference_binned_ap_bounds(scores, positives, num_bins, num_positives=None):
    """AP with every bin's positives listed last (lower bound) and first (upper bound)."""
    bins = [min(int(float(s) * num_bins), num_bins - 1) for s in scores]
    lower = reference_ap(scores, positives, num_positives, key=lambda i: (-bins[i], bool(positives[i])))
    upper = reference_ap(scores, positives, num_positives, key=lambda i: (-bins[i], not positives[i]))
    return lower, upper


def random_multi_label(seed, num_videos, num_classes, tied):
    rng = np.random.default_rng(seed)
    if tied:  # few distinct values: many ties inside and across videos
        scores = rng.integers(0, 5, size=(num_videos, num_classes)) / 4
    else:
        scores = rng.random((num_videos, num_classes))
    labels = (rng.random((num_videos, num_classes)) < 0.3).astype(np.int64)
    labels[0] = 0  # a video without labels
    labels[:, -1] = 0  # a class that is never positive
    return labels, scores.astype(np.float32)


def feed(metrics, labels, scores, batch_sizes):
    start = 0
    for size in batch_sizes:
        metrics.update(labels[start : start + size], scores[start : start + size])
        start += size
    assert start == len(scores)
    return metrics


def assert_results_close(got, want, atol=1e-12):
    assert set(want) <= set(got)
    for key, value in want.items():
        if math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, abs=atol), key


# ----------------------------------------------------------------------------------------------------------
# average_precision


def test_average_precision_hand_computed():
    # Ranked + - + -: precisions 1/1 and 2/3 at the positives.
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx((1 + 2 / 3) / 2)
    # One positive was never retrieved: it counts in the denominator only.
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0], num_positives=3) == pytest.approx(
        (1 + 2 / 3) / 3
    )
    assert average_precision([0.3, 0.1], [False, False]) == 0.0
    assert average_precision([0.3, 0.1], [0, 0], num_positives=0) == 0.0
    # Ties: stable sort, the earlier item first.
    assert average_precision([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
    assert average_precision([0.5, 0.5], [1, 0]) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_average_precision_matches_reference(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=40) / 5 if seed % 2 else rng.normal(size=40)
    positives = rng.random(40) < 0.4
    extra = int(rng.integers(0, 5))
    want = reference_ap(scores, positives, int(positives.sum()) + extra)
    assert average_precision(scores, positives, int(positives.sum()) + extra) == pytest.approx(
        want, abs=1e-12
    )


def test_average_precision_errors():
    with pytest.raises(ValueError, match=r"equal length.*\(3,\) and \(2,\)"):
        average_precision([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="at least the number of positives"):
        average_precision([0.1, 0.2, 0.3], [1, 1, 0], num_positives=1)
    with pytest.raises(ValueError, match="finite"):
        average_precision([0.1, np.nan], [1, 0])


# ----------------------------------------------------------------------------------------------------------
# Ranking helper


@pytest.mark.parametrize("k", [1, 3, 7, 12])
def test_top_k_indices_is_a_stable_descending_sort(k):
    rng = np.random.default_rng(k)
    scores = rng.integers(0, 3, size=(50, 12)).astype(np.float64)
    scores[0] = 0.0  # every score tied
    np.testing.assert_array_equal(
        _top_k_indices(scores, k), np.argsort(-scores, axis=1, kind="stable")[:, :k]
    )


# ----------------------------------------------------------------------------------------------------------
# Single-label


def test_single_label_hand_computed_with_ties_and_fewer_than_five_classes():
    metrics = SingleLabelMetrics(num_classes=3)
    predictions = np.array(
        [
            [0.5, 0.5, 0.0],  # label 1 ties with class 0; class 0 wins: top-1 miss
            [0.5, 0.5, 0.0],  # label 0 wins the tie: top-1 hit
            [0.2, 0.3, 0.5],  # label 0 ranked last, still within top-5 (k = min(5, 3) = 3)
            [0.1, 0.7, 0.2],  # label 1: hit
        ]
    )
    metrics.update(np.array([1, 0, 0, 1]), predictions)
    # Class 0: 1 of 2 correct, class 1: 1 of 2, class 2 absent from the labels (excluded).
    assert metrics.result() == {"top1": 0.5, "top5": 1.0, "mean_class_accuracy": 0.5}
    assert metrics.num_examples == 4


def test_single_label_top_k_boundary():
    metrics = SingleLabelMetrics(num_classes=8, top_k=2)
    scores = np.array([[0.9, 0.8, 0.8, 0.1, 0, 0, 0, 0]])
    metrics.update(np.array([2]), scores)  # rank 2 (0-based): class 1 wins the tie
    assert metrics.result()["top2"] == 0.0
    metrics.update(np.array([1]), scores)
    assert metrics.result()["top2"] == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("one_hot", [False, True])
def test_single_label_streaming_matches_reference(seed, one_hot):
    rng = np.random.default_rng(seed)
    num_videos, num_classes = 37, 9
    class_ids = rng.integers(0, num_classes - 1, size=num_videos)  # the last class never occurs
    scores = rng.integers(0, 4, size=(num_videos, num_classes)).astype(np.float32)  # ties
    scores[::5] = rng.normal(size=(len(scores[::5]), num_classes))  # and logits
    labels = np.eye(num_classes, dtype=np.float32)[class_ids] if one_hot else class_ids
    want = reference_single(class_ids, scores)
    one_shot = feed(SingleLabelMetrics(num_classes), labels, scores, [num_videos])
    streamed = feed(SingleLabelMetrics(num_classes), labels, scores, [1, 10, 0, 3, 23])
    assert_results_close(one_shot.result(), want)
    assert one_shot.result() == streamed.result()


def test_single_label_merge_and_reset():
    rng = np.random.default_rng(5)
    class_ids = rng.integers(0, 6, size=30)
    scores = rng.random((30, 6))
    whole = feed(SingleLabelMetrics(6), class_ids, scores, [30])
    first = feed(SingleLabelMetrics(6), class_ids[:12], scores[:12], [12])
    second = feed(SingleLabelMetrics(6), class_ids[12:], scores[12:], [5, 13])
    first.merge(second)
    assert first.result() == whole.result()
    assert first.num_examples == 30
    first.reset()
    with pytest.raises(RuntimeError, match="No examples"):
        first.result()
    with pytest.raises(ValueError, match=r"SingleLabelMetrics\(num_classes=6, top_k=5\)"):
        first.merge(SingleLabelMetrics(6, top_k=3))
    with pytest.raises(ValueError, match="Can only merge"):
        first.merge(MultiLabelMetrics(6))


def test_single_label_errors():
    metrics = SingleLabelMetrics(num_classes=4)
    with pytest.raises(ValueError, match=r"shape \(batch, 4\); found shape \(2, 3\)"):
        metrics.update(np.array([0, 1]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"shape \(2,\) like `predictions`; found shape \(3,\)"):
        metrics.update(np.array([0, 1, 2]), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"shape \(2, 4\) like `predictions`; found shape \(2, 5\)"):
        metrics.update(np.zeros((2, 5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="exactly one 1 per row"):
        metrics.update(np.array([[1, 1, 0, 0], [1, 0, 0, 0]]), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"must lie in \[0, 4\); found values in \[0, 4\]"):
        metrics.update(np.array([0, 4]), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="must be integers; found dtype float64"):
        metrics.update(np.array([0.0, 1.0]), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="finite"):
        metrics.update(np.array([0, 1]), np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match=r"class ids of shape \(2,\) or one-hot"):
        metrics.update(np.zeros((2, 4, 1)), np.zeros((2, 4)))
    with pytest.raises(RuntimeError, match="call update"):
        metrics.result()
    with pytest.raises(ValueError, match="`num_classes` must be a positive integer; found 0"):
        SingleLabelMetrics(0)
    with pytest.raises(ValueError, match="`top_k` must be a positive integer; found 2.5"):
        SingleLabelMetrics(3, top_k=2.5)


# ----------------------------------------------------------------------------------------------------------
# Multi-label

# Three videos, three classes (top_k = 2 so that the truncation shows):
#   video A: scores (0.9, 0.3, 0.1), labels (1, 0, 1)  ranking 0, 1, 2
#   video B: scores (0.2, 0.8, 0.5), labels (0, 1, 0)  ranking 1, 2, 0
#   video C: scores (0.4, 0.6, 0.7), labels (1, 0, 0)  ranking 2, 1, 0
HAND_LABELS = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0]])
HAND_SCORES = np.array([[0.9, 0.3, 0.1], [0.2, 0.8, 0.5], [0.4, 0.6, 0.7]])
HAND_RESULT = {
    # Pool of the top 2 per video: 0.9+ 0.8+ 0.7- 0.6- 0.5- 0.3-, 4 positive labels in total:
    # GAP = (1/1 + 2/2) / 4 = 0.5 (two positives, A's class 2 and C's class 0, were not retrieved).
    "gap": 0.5,
    # Top-1 classes: A -> 0 (hit), B -> 1 (hit), C -> 2 (miss).
    "hit_at_1": 2 / 3,
    # A has 2 labels, top 2 = {0, 1}: 1/2; B: top 1 = {1}: 1; C: top 1 = {2}: 0.
    "perr": (0.5 + 1 + 0) / 3,
    # Per class over all videos: class 0 ranks A+ C+ B-: AP 1; class 1 ranks B+ C- A-: AP 1;
    # class 2 ranks C- B- A+: AP 1/3.
    "map": (1 + 1 + 1 / 3) / 3,
    # Only top-2 candidates: class 0 = {A+} of 2 positives: 1/2; class 1 = {B+, C-, A-}: 1;
    # class 2 = {C-, B-}: 0 of 1 positive: 0.
    "map_top20": (0.5 + 1 + 0) / 3,
}


def test_multi_label_hand_computed():
    exact = MultiLabelMetrics(num_classes=3, top_k=2, map_bins=None)
    exact.update(HAND_LABELS, HAND_SCORES)
    assert_results_close(exact.result(), HAND_RESULT)
    assert set(exact.result()) == set(HAND_RESULT)
    assert_results_close(exact.result(), reference_multi(HAND_LABELS, HAND_SCORES, top_k=2))
    # The default top_k = 20 > C keeps everything: GAP is then the AP of the whole pooled list.
    full = MultiLabelMetrics(num_classes=3, map_bins=None)
    full.update(HAND_LABELS, HAND_SCORES)
    assert full.result()["gap"] == pytest.approx(reference_ap(HAND_SCORES.ravel(), HAND_LABELS.ravel()))
    # Histogram-binned map: no bin holds both a positive and a negative of the same class here.
    binned = MultiLabelMetrics(num_classes=3, top_k=2)
    binned.update(HAND_LABELS, HAND_SCORES)
    assert binned.result()["map"] == pytest.approx(HAND_RESULT["map"], abs=1e-12)
    assert binned.result()["map_error_bound"] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("tied", [False, True])
def test_multi_label_streaming_matches_reference(seed, tied):
    num_videos, num_classes, top_k = 41, 11, 4
    labels, scores = random_multi_label(seed, num_videos, num_classes, tied)
    want = reference_multi(labels, scores, top_k=top_k)
    one_shot = feed(MultiLabelMetrics(num_classes, top_k, map_bins=None), labels, scores, [41])
    streamed = feed(MultiLabelMetrics(num_classes, top_k, map_bins=None), labels, scores, [3, 1, 0, 20, 17])
    assert_results_close(one_shot.result(), want)
    assert_results_close(streamed.result(), one_shot.result(), atol=1e-14)


def test_multi_label_default_top20_with_many_classes():
    labels, scores = random_multi_label(7, num_videos=25, num_classes=30, tied=True)
    metrics = feed(MultiLabelMetrics(30, map_bins=None), labels, scores, [9, 16])
    assert_results_close(metrics.result(), reference_multi(labels, scores, top_k=20))


def test_multi_label_edge_cases_no_labels_and_never_positive_class():
    labels = np.array([[0, 0, 0], [1, 0, 0]])
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]])
    metrics = MultiLabelMetrics(num_classes=3, map_bins=None)
    metrics.update(labels, scores)
    result = metrics.result()
    assert result["hit_at_1"] == 0.0  # the unlabeled video counts as a miss; the other misses too
    assert result["perr"] == 0.0  # only the labeled video: top 1 = class 1, a miss
    # Class 0 ranks video 0 (negative, 0.9) above video 1 (positive): AP 1/2; classes 1, 2 excluded.
    assert result["map"] == pytest.approx(0.5)
    # map_top20 averages over all three classes, the never-positive ones contributing 0.
    assert result["map_top20"] == pytest.approx(0.5 / 3)
    # Pool (all 6 pairs): 0.9- 0.7- 0.2+ ...: AP = (1/3) / 1.
    assert result["gap"] == pytest.approx(1 / 3)

    empty = MultiLabelMetrics(num_classes=2)
    empty.update(np.zeros((2, 2)), np.full((2, 2), 0.5))
    result = empty.result()
    assert result["gap"] == 0.0 and result["hit_at_1"] == 0.0 and result["map_top20"] == 0.0
    assert math.isnan(result["perr"]) and math.isnan(result["map"])
    assert math.isnan(result["map_error_bound"])


@pytest.mark.parametrize(("seed", "num_bins"), [(0, 3), (1, 7), (2, 50)])
def test_binned_map_bounds_equal_best_and_worst_orders(seed, num_bins):
    labels, scores = random_multi_label(seed, 60, 6, tied=seed == 0)
    metrics = feed(MultiLabelMetrics(6, map_bins=num_bins), labels, scores, [13, 47])
    result = metrics.result()
    present = [c for c in range(6) if labels[:, c].any()]
    bounds = [reference_binned_ap_bounds(scores[:, c], labels[:, c], num_bins) for c in present]
    lower, upper = np.mean([b[0] for b in bounds]), np.mean([b[1] for b in bounds])
    assert result["map"] - result["map_error_bound"] == pytest.approx(lower, abs=1e-12)
    assert result["map"] + result["map_error_bound"] == pytest.approx(upper, abs=1e-12)
    exact = reference_multi(labels, scores)["map"]
    assert abs(result["map"] - exact) <= result["map_error_bound"] + 1e-12
    assert result["map_error_bound"] > 0  # coarse bins: the bound is not trivially zero here


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binned_map_is_accurate_with_default_bins(seed):
    labels, scores = random_multi_label(seed, 400, 12, tied=False)
    metrics = feed(MultiLabelMetrics(12), labels, scores, [100, 37, 263])
    result = metrics.result()
    exact = reference_multi(labels, scores)["map"]
    assert abs(result["map"] - exact) <= result["map_error_bound"] + 1e-12
    assert result["map_error_bound"] < 1e-3
    assert result["map"] == pytest.approx(exact, abs=1e-3)


@pytest.mark.parametrize("num_bins", [4, 1000])
def test_binned_gap_bounds(num_bins):
    labels, scores = random_multi_label(3, 50, 9, tied=num_bins == 4)
    metrics = feed(MultiLabelMetrics(9, top_k=3, gap_bins=num_bins), labels, scores, [20, 30])
    result = metrics.result()
    assert "map_top20" not in result
    rankings = [ranking(row) for row in scores]
    pool = [(scores[n, c], labels[n, c]) for n in range(50) for c in rankings[n][:3]]
    lower, upper = reference_binned_ap_bounds(
        [s for s, _ in pool], [p for _, p in pool], num_bins, int(labels.sum())
    )
    assert result["gap"] - result["gap_error_bound"] == pytest.approx(lower, abs=1e-12)
    assert result["gap"] + result["gap_error_bound"] == pytest.approx(upper, abs=1e-12)
    exact = reference_multi(labels, scores, top_k=3)["gap"]
    assert abs(result["gap"] - exact) <= result["gap_error_bound"] + 1e-12


def test_binned_state_does_not_grow_with_videos():
    def state_size(metrics):
        size = 0
        for value in vars(metrics).values():
            if isinstance(value, np.ndarray):
                size += value.nbytes
            elif isinstance(value, list):
                size += sum(item.nbytes for item in value)
        return size

    labels, scores = random_multi_label(4, 200, 10, tied=False)
    metrics = MultiLabelMetrics(10, map_bins=100, gap_bins=100)
    metrics.update(labels[:10], scores[:10])
    size = state_size(metrics)
    metrics.update(labels[10:], scores[10:])
    assert state_size(metrics) == size
    exact = MultiLabelMetrics(10, top_k=3, map_bins=100)
    exact.update(labels[:10], scores[:10])
    size = state_size(exact)
    exact.update(labels[10:], scores[10:])
    # Exact GAP keeps per video its top 3 scores (float32), flags and class ids (uint8).
    assert state_size(exact) - size == 190 * 3 * (4 + 1 + 1)


@pytest.mark.parametrize("options", [{"map_bins": None}, {}, {"gap_bins": 64, "map_bins": 32}], ids=str)
def test_multi_label_merge_equals_one_accumulator(options):
    labels, scores = random_multi_label(9, 45, 8, tied=True)
    whole = feed(MultiLabelMetrics(8, top_k=3, **options), labels, scores, [45])
    first = feed(MultiLabelMetrics(8, top_k=3, **options), labels[:20], scores[:20], [7, 13])
    second = feed(MultiLabelMetrics(8, top_k=3, **options), labels[20:], scores[20:], [25])
    first.merge(second)
    assert first.num_examples == 45
    assert_results_close(first.result(), whole.result(), atol=1e-14)


def test_multi_label_reset_and_merge_errors():
    metrics = MultiLabelMetrics(3, top_k=2, map_bins=None)
    metrics.update(HAND_LABELS, HAND_SCORES)
    metrics.reset()
    with pytest.raises(RuntimeError, match="No examples"):
        metrics.result()
    metrics.update(HAND_LABELS, HAND_SCORES)
    assert_results_close(metrics.result(), HAND_RESULT)
    with pytest.raises(ValueError, match=r"Can only merge MultiLabelMetrics\(.*found MultiLabel"):
        metrics.merge(MultiLabelMetrics(3, top_k=2))  # map_bins differ
    with pytest.raises(ValueError, match="Can only merge"):
        metrics.merge(SingleLabelMetrics(3))


def test_multi_label_errors():
    metrics = MultiLabelMetrics(num_classes=3)
    with pytest.raises(ValueError, match=r"shape \(batch, 3\); found shape \(2, 4\)"):
        metrics.update(np.zeros((2, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"shape \(2, 3\) .*found shape \(2,\)"):
        metrics.update(np.array([0, 1]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        metrics.update(np.full((2, 3), 0.5), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"scores in \[0, 1\].*found scores in \[-1.0, 0.5\]"):
        metrics.update(np.zeros((2, 3)), np.array([[0.5, 0.1, 0.2], [-1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="finite"):
        metrics.update(np.zeros((1, 3)), np.array([[0.5, np.inf, 0.2]]))
    with pytest.raises(ValueError, match="`map_bins` must be a positive integer; found 0"):
        MultiLabelMetrics(3, map_bins=0)
    with pytest.raises(ValueError, match="`gap_bins` must be a positive integer"):
        MultiLabelMetrics(3, gap_bins=-1)
    # Exact mode ranks any finite scores, logits included.
    exact = MultiLabelMetrics(num_classes=3, top_k=2, map_bins=None)
    exact.update(HAND_LABELS, np.log(HAND_SCORES))
    assert_results_close(exact.result(), HAND_RESULT)


# ----------------------------------------------------------------------------------------------------------
# Factory


def test_make_metrics():
    single = make_metrics("single", 7)
    assert isinstance(single, SingleLabelMetrics) and single.num_classes == 7
    multi = make_metrics("multi", 5, map_bins=None)
    assert isinstance(multi, MultiLabelMetrics) and multi.map_bins is None
    with pytest.raises(ValueError, match='`label_mode` must be "single" or "multi"; found \'multiple\''):
        make_metrics("multiple", 5)
