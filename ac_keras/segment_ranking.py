"""The YouTube-8M 2019 segment submission and its score, streamed: per class a bounded heap of segments.

`SegmentSubmission` takes the class probabilities of segments batch by batch (`ac_keras.data.segments`
gives the segments) and keeps, for each class of `segment_label_ids.csv`, its best `top_segments` segments,
exactly as the starter's `inference.py --segment_labels` does, so that the CSV it writes is the starter's for
the same scores, byte for byte:

- per segment, the `top_k` classes of the list by score (the starter's `--top_k`, default 20; among equal
  scores the lower class id, where the starter's `np.argpartition` leaves the order undefined);
- each of them pushes `(score, "video:start")` onto its class's heap, the score as the starter reads it back
  from its temporary file (`float("%g" % score)`: six significant digits), the heap kept at `top_segments`
  with `heapq.heappushpop` (so among equal scores the larger segment id, as a string, stays);
- `Class,Segments` then, per class in the order the classes first entered a heap, `class,video:start ...`,
  the heap sorted by score, best first (a stable sort of the heap's own list, as the starter's).

Memory: at most `top_segments` entries per listed class (about 100 bytes each: a tuple, a float and a
shared id string), whatever the number of videos; nothing else is kept per segment. A batch's candidates
below every kept entry of their class's full heap are dropped with one NumPy comparison before any Python
work.

`RatedSegments` collects the 2019 ratings of the same segments, and `score` gives `segment_map`
(`ac_keras.metrics.segment_mean_average_precision`) of a submission: what the starter's
`segment_eval_inference.py` reports for the CSV.
"""

import heapq
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from ac_keras import metrics, schema
from ac_keras.data import segments

HEADER = "Class,Segments"
# The starter's `--segment_max_pred` and `--top_k`.
DEFAULT_TOP_SEGMENTS = 100_000
DEFAULT_TOP_K = 20
# A score this far (relative) below a full heap's smallest cannot reach it after "%g" rounding (which moves
# a value by at most 5e-6 of itself).
_ROUNDING_MARGIN = 1e-5


def segment_ids(video_ids, starts) -> list[str]:
    """The starter's segment ids, `"<video id>:<start>"` (the id as UTF-8 text; bad bytes replaced)."""
    return [
        f"{video_id.decode('utf-8', 'replace') if isinstance(video_id, bytes) else video_id}:{int(start)}"
        for video_id, start in zip(video_ids, starts, strict=True)
    ]


class SegmentSubmission:
    """The per-class bounded heaps of the starter's segment submission (see the module docstring).

    Args:
        classes: the class ids of the submission (`segment_label_ids.csv`), each in `[0, num_classes)`.
        num_classes: int, the model's number of classes (the width of the probabilities).
        top_segments: int, segments kept per class (the starter's `--segment_max_pred`). Defaults to 100,000.
        top_k: int, classes of the list taken per segment (the starter's `--top_k`). Defaults to 20.

    Raises:
        ValueError: no class, a class outside `[0, num_classes)`, or a count that is not positive.
    """

    def __init__(
        self,
        classes: Sequence[int],
        num_classes: int,
        *,
        top_segments=DEFAULT_TOP_SEGMENTS,
        top_k=DEFAULT_TOP_K,
    ):
        self.classes = np.array(sorted({int(c) for c in classes}), np.int64)
        if not self.classes.size or self.classes[0] < 0 or self.classes[-1] >= num_classes:
            raise ValueError(
                f"classes must be a non-empty list of ids in [0, {num_classes}), got {classes!r}."
            )
        for name, value in (("top_segments", top_segments), ("top_k", top_k)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        self.num_classes = num_classes
        self.top_segments = int(top_segments)
        self.top_k = min(int(top_k), self.classes.size)
        self.num_segments = 0
        self._heaps = {}  # class id -> heap of (score, segment id); insertion order = the CSV's class order
        # Per listed class: the smallest score of its heap once full (-inf before), for the batch prefilter.
        self._floors = np.full(self.classes.size, -np.inf)

    def update(self, video_ids, starts, probabilities, ids: Sequence[str] | None = None) -> None:
        """Adds a batch of segments.

        Args:
            video_ids: `(segments,)` video ids (bytes or str).
            starts: `(segments,)` int segment starts (seconds).
            probabilities: `(segments, num_classes)` scores.
            ids: the batch's `segment_ids`, when the caller has them already.

        Raises:
            ValueError: probabilities of another width than num_classes, or lengths that differ.
        """
        scores = np.asarray(probabilities)
        if scores.ndim != 2 or scores.shape[1] != self.num_classes or scores.shape[0] != len(starts):
            raise ValueError(
                f"probabilities must be (segments, {self.num_classes}) for {len(starts)} segments, "
                f"got {scores.shape}."
            )
        if not scores.shape[0]:
            return
        self.num_segments += scores.shape[0]
        ids = segment_ids(video_ids, starts) if ids is None else ids
        listed = scores[:, self.classes]
        positions = metrics.top_k_indices(listed, self.top_k)  # (segments, k), best first
        raw = np.take_along_axis(listed, positions, axis=1).astype(np.float64)
        floors = self._floors[positions]
        candidates = raw >= floors - np.abs(floors) * _ROUNDING_MARGIN
        rows, columns = np.nonzero(candidates)  # segment order, then the segment's best class first
        limit = self.top_segments
        heaps = self._heaps
        class_ids = self.classes[positions[rows, columns]].tolist()
        values = raw[rows, columns].tolist()
        for row, class_id, value in zip(rows.tolist(), class_ids, values, strict=True):
            heap = heaps.get(class_id)
            if heap is None:
                heap = heaps[class_id] = []
            item = (float("%g" % value), ids[row])  # noqa: UP031  (the starter's formatting)
            if len(heap) >= limit:
                heapq.heappushpop(heap, item)
            else:
                heapq.heappush(heap, item)
        for position, class_id in enumerate(self.classes.tolist()):
            heap = heaps.get(class_id)
            if heap is not None and len(heap) >= limit:
                self._floors[position] = heap[0][0]

    def ranked(self) -> dict[int, list[str]]:
        """class id -> its segment ids, best first, in the CSV's class order."""
        return {
            class_id: [segment for _, segment in _best_first(heap)] for class_id, heap in self._heaps.items()
        }

    def lines(self) -> Iterator[str]:
        """The CSV's lines, each ending in a newline: the header, then one per class."""
        yield HEADER + "\n"
        for class_id, heap in self._heaps.items():
            yield f"{class_id},{' '.join(segment for _, segment in _best_first(heap))}\n"

    def write_csv(self, path: str, overwrite: bool = False) -> int:
        """Writes the submission CSV via a temporary file; returns the number of class rows.

        Raises:
            FileExistsError: `path` exists and not `overwrite`.
        """
        if tf.io.gfile.exists(path) and not overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it.")
        temporary = f"{path}.tmp"
        with tf.io.gfile.GFile(temporary, "w") as handle:
            for line in self.lines():
                handle.write(line)
        tf.io.gfile.rename(temporary, path, overwrite=True)
        return len(self._heaps)


def _best_first(heap):
    # The starter sorts its heap list in place by score only: a stable sort, equal scores in heap order.
    return sorted(heap, key=lambda item: item[0], reverse=True)


class RatedSegments:
    """The 2019 ratings of the segments read, `(segment id, class) -> rating` (a later rating of the same pair
    replaces an earlier one, as in the starter's dict)."""

    def __init__(self):
        self.ratings = {}

    def update(self, ids: Sequence[str], rated_classes, rated_scores) -> None:
        """Adds the ratings of a batch of segments.

        Args:
            ids: `(segments,)` segment ids (`segment_ids`).
            rated_classes: int `tf.RaggedTensor` `(segments, None)`, the rated classes of each segment.
            rated_scores: float `tf.RaggedTensor` `(segments, None)`, their ratings.
        """
        lengths = np.asarray(rated_classes.row_lengths())
        if not lengths.sum():
            return
        rows = np.repeat(np.arange(lengths.size), lengths)
        classes = np.asarray(rated_classes.flat_values).tolist()
        scores = np.asarray(rated_scores.flat_values).tolist()
        for row, class_id, score in zip(rows.tolist(), classes, scores, strict=True):
            self.ratings[(ids[row], class_id)] = score

    def score(self, submission: SegmentSubmission) -> dict:
        """`segment_map` of `submission` over these ratings, with what it counted.

        Returns:
            dict: `segment_map`, `segment_map_classes` (see `metrics.segment_mean_average_precision`),
            `submission_classes`, `rated_pairs`, `rated_positives`, `segments`, `top_segments`, `top_k`.
        """
        ranked = submission.ranked()
        result = metrics.segment_mean_average_precision(ranked, self.ratings)
        result.update(
            submission_classes=len(ranked),
            rated_pairs=len(self.ratings),
            rated_positives=sum(1 for rating in self.ratings.values() if rating > 0),
            segments=submission.num_segments,
            top_segments=submission.top_segments,
            top_k=submission.top_k,
        )
        return result


def segment_batches(predictor, dataset, features) -> Iterator[tuple[list[str], dict, np.ndarray]]:
    """Runs the segments of a segment-mode dataset (`ac_keras.data.segments`) through a predictor.

    Args:
        predictor: a function from features (modality -> ragged frames) to probabilities, as
            `artifacts.load_predictor` gives.
        dataset: batches of `make_dataset(..., segment_size=...)` (e.g. `Task.segment_dataset`).
        features: the model's feature spec string or `schema.FeatureSpec`s.

    Yields:
        `(ids, batch, probabilities)` per non-empty batch: the segment ids ("video:start"), the batch as
        NumPy values (the segment keys of `segments.INFO_KEYS`; ratings stay ragged tensors), and the
        probabilities `(segments, num_classes)`.
    """
    for batch in dataset:
        starts = batch[segments.START_KEY].numpy()
        if not starts.size:
            continue
        probabilities = np.asarray(predictor(segments.model_features(batch, features)))
        info = {
            schema.VIDEO_ID_KEY: batch[schema.VIDEO_ID_KEY].numpy(),
            segments.START_KEY: starts,
            segments.END_KEY: batch[segments.END_KEY].numpy(),
            segments.RATED_CLASSES_KEY: batch[segments.RATED_CLASSES_KEY],
            segments.RATED_SCORES_KEY: batch[segments.RATED_SCORES_KEY],
        }
        yield segment_ids(info[schema.VIDEO_ID_KEY], starts), info, probabilities
