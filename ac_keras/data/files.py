"""Files: listing TFRecord files and reading them record by record with byte accounting.

Files are listed with `tf.io.gfile` (so `gs://` works). Each file is read with `ignore_errors()`, so a
corrupt or truncated file ends where the damage starts, and the bytes read are counted (a TFRecord costs
its length + 16 bytes of framing) and compared with the file's size. A shortfall raises an error naming the
file, or with `skip_corrupt=True` skips the rest of that file and counts it in a `SkipCounter`.

Two readers: `read_records` + `check_pass` (the default) read record by record with nothing running per
record, count bytes per batch and compare at the end of each pass over the files; `read_chunks` checks
each file as it ends, for readers that see only some of the files (the tf.data service), at a higher cost
per record (docs/benchmarks.md).
"""

import concurrent.futures
import hashlib
import os
import sys
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from ac_keras.errors import MissingDataError

# A TFRecord stores length (8 bytes), CRC of length (4), data, CRC of data (4).
_RECORD_FRAMING_BYTES = 16
DEFAULT_CYCLE_LENGTH = 8
# Records per chunk read from one file; bookkeeping (byte counts, names) runs once per chunk.
RECORDS_PER_CHUNK = 16
# Upper bound of the record indices within one file (Dataset.range needs one).
_MAX_RECORDS = 1 << 62


class SkipCounter:
    """Counts what `skip_corrupt` / `skip_nonfinite` skipped; updated from inside the tf.data graph.

    Example:
        >>> counter = SkipCounter()
        >>> dataset = make_dataset(..., skip_corrupt=True, skip_counter=counter)
        >>> for batch in dataset: ...
        >>> counter.as_dict()
        {'corrupt_files': 1, 'unread_bytes': 5120, 'nonfinite_videos': 0}
    """

    def __init__(self):
        self.corrupt_files = tf.Variable(0, dtype=tf.int64, trainable=False, name="corrupt_files")
        self.unread_bytes = tf.Variable(0, dtype=tf.int64, trainable=False, name="unread_bytes")
        self.nonfinite_videos = tf.Variable(0, dtype=tf.int64, trainable=False, name="nonfinite_videos")

    def as_dict(self) -> dict[str, int]:
        """Returns the counts: corrupt files, bytes left unread in them, videos with NaN/Inf features."""
        return {
            "corrupt_files": int(self.corrupt_files.numpy()),
            "unread_bytes": int(self.unread_bytes.numpy()),
            "nonfinite_videos": int(self.nonfinite_videos.numpy()),
        }

    def log_summary(self) -> None:
        """Logs the counts with absl logging (a warning when anything was skipped)."""
        counts = self.as_dict()
        if counts["corrupt_files"] or counts["nonfinite_videos"]:
            logging.warning(
                "Input pipeline skipped the rest of %d corrupt or truncated file(s) (%d bytes unread) "
                "and %d video(s) with NaN/Inf features.",
                counts["corrupt_files"],
                counts["unread_bytes"],
                counts["nonfinite_videos"],
            )
        else:
            logging.info("Input pipeline skipped nothing.")


def list_files(file_pattern: str | Sequence[str]) -> list[str]:
    """Lists the files matching one or more glob patterns with `tf.io.gfile` (local or `gs://`).

    Args:
        file_pattern: str (comma-separated globs allowed) or a sequence of globs.

    Returns:
        The sorted, de-duplicated list of matching files.

    Raises:
        MissingDataError (a FileNotFoundError): a pattern matches nothing; the message names the pattern.
    """
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    patterns = [part.strip() for pattern in patterns for part in pattern.split(",") if part.strip()]
    if not patterns:
        raise MissingDataError(f"file_pattern is empty: {file_pattern!r}.")
    files = set()
    for pattern in patterns:
        matches = tf.io.gfile.glob(pattern)
        if not matches:
            raise MissingDataError(f"No files match file_pattern {pattern!r}.")
        files.update(matches)
    return sorted(files)


def file_sizes(files: Sequence[str]) -> list[int]:
    """The size in bytes of each file, in order (stat requests run in parallel, one per file on `gs://`)."""
    if len(files) == 1:
        return [tf.io.gfile.stat(files[0]).length]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, len(files))) as pool:
        return [stat.length for stat in pool.map(tf.io.gfile.stat, files)]


def mean_record_bytes(files: Sequence[str], sample: int = 256) -> float:
    """The mean serialized size of the first `sample` records of `files` (read from the first files on), or
    0.0 when they hold none. Corrupt or truncated data ends the sample early (the reader names it later)."""
    sizes = []
    try:
        for record in tf.data.TFRecordDataset(list(files[:8])).take(sample):
            sizes.append(len(record.numpy()))
    except (tf.errors.DataLossError, tf.errors.OutOfRangeError):
        pass
    return float(np.mean(sizes)) if sizes else 0.0


def file_dataset(files: Sequence[str], sizes: Sequence[int] | None = None) -> tf.data.Dataset:
    """A dataset of `(filename, file_size, file_index)`, one per file, in the given order.

    Args:
        files: the file paths.
        sizes: their sizes in bytes, or None to stat them (`file_sizes`).

    A zero-byte file holds no record: it is read as empty, with a warning naming it.
    """
    sizes = file_sizes(files) if sizes is None else list(sizes)
    for filename, size in zip(files, sizes, strict=True):
        if size == 0:
            logging.warning("Record file %s is empty (0 bytes): it holds no records.", filename)
    indices = tf.range(len(files), dtype=tf.int64)
    return tf.data.Dataset.from_tensor_slices(
        (tf.constant(list(files), tf.string), tf.constant(sizes, tf.int64), indices)
    )


def read_records(
    file_triples: tf.data.Dataset, *, num_files: int, num_parallel_reads: int | None, deterministic: bool
) -> tf.data.Dataset:
    """Reads the files of `file_triples` in parallel, record by record, with each record's position.

    Nothing runs per record but the read itself (no function: a per-record function costs about as much as
    reading the record); the byte accounting runs per batch (`check_pass`). A corrupt or truncated file
    ends where the damage starts (`ignore_errors`); `check_pass` notices the missing bytes.

    Args:
        file_triples: dataset of `(filename, file_size, file_index)` (see `file_dataset`).
        num_files: int, the number of files (bounds the interleave cycle).
        num_parallel_reads: int or None, files read in parallel. None: min(num_files, 8).
        deterministic: bool, whether records of different files come in a fixed round-robin order.

    Returns:
        A dataset of `(record, record_index, file_index)`: the serialized record (string scalar), its index
        in its file and the file's index (int64 scalars).
    """

    def read_file(filename, file_size, file_index):
        del file_size
        return tf.data.Dataset.zip(
            tf.data.TFRecordDataset(filename).ignore_errors(),
            tf.data.Dataset.range(_MAX_RECORDS),
            tf.data.Dataset.from_tensors(file_index).repeat(),
        )

    return file_triples.interleave(
        read_file,
        cycle_length=min(num_files, num_parallel_reads or DEFAULT_CYCLE_LENGTH),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )


def check_pass(
    batches: tf.data.Dataset,
    files: Sequence[str],
    sizes: Sequence[int],
    *,
    skip_corrupt: bool,
    skip_counter: SkipCounter | None,
) -> tf.data.Dataset:
    """Byte accounting of one pass over the files, per batch; the pass must read every file of `files`.

    Each batch's record bytes (+16 bytes of framing per record) are added to its files' totals. An empty
    batch is appended to mark the end of the pass; there every file's total is compared with its size. A
    shortfall raises an error naming the file (the first few when several), or with `skip_corrupt` prints a
    warning per file and counts them in `skip_counter`. The marker stays in the output (an empty batch)
    for the caller to report and drop.

    Args:
        batches: dataset of `(records, record_indices, file_indices)` batches (see `read_records`).
        files: the file paths, indexed by `file_index`.
        sizes: their sizes in bytes.
        skip_corrupt: bool, count and warn instead of raising.
        skip_counter: `SkipCounter`, needed with skip_corrupt.

    Returns:
        `batches` followed by one empty batch, each batch checked.
    """
    if skip_corrupt and skip_counter is None:
        raise ValueError("skip_corrupt=True needs a skip_counter.")
    num_files = len(files)
    file_names = tf.constant(list(files), tf.string)
    file_sizes_tensor = tf.constant(list(sizes), tf.int64)
    end_marker = (tf.zeros([0], tf.string), tf.zeros([0], tf.int64), tf.zeros([0], tf.int64))
    marked = batches.concatenate(tf.data.Dataset.from_tensors(end_marker))

    def count(state, batch):
        num_bytes, num_records = state
        records, record_indices, file_indices = batch
        rows = file_indices[:, tf.newaxis]
        lengths = tf.cast(tf.strings.length(records), tf.int64) + _RECORD_FRAMING_BYTES
        num_bytes = tf.tensor_scatter_nd_add(num_bytes, rows, lengths)
        num_records = tf.tensor_scatter_nd_add(num_records, rows, tf.ones_like(record_indices))
        is_end = tf.equal(tf.size(records), 0)
        incomplete = is_end & tf.not_equal(num_bytes, file_sizes_tensor)
        checks = _check_files(
            file_names, file_sizes_tensor, incomplete, num_records, num_bytes, skip_corrupt, skip_counter
        )
        with tf.control_dependencies(checks):
            records = tf.identity(records)
        return (num_bytes, num_records), (records, record_indices, file_indices)

    zeros = tf.zeros([num_files], tf.int64)
    return marked.scan((zeros, zeros), count)


def record_names(file_names: tf.Tensor, record_indices, file_indices) -> tf.Tensor:
    """The "file:index" names of records from their positions (`read_records`), for error messages."""
    return tf.strings.join([tf.gather(file_names, file_indices), ":", tf.strings.as_string(record_indices)])


def read_chunks(
    file_triples: tf.data.Dataset,
    *,
    num_files: int,
    skip_corrupt: bool,
    skip_counter: SkipCounter | None,
    num_parallel_reads: int | None,
    deterministic: bool,
) -> tf.data.Dataset:
    """Reads the files in parallel as chunks of records, checking each file as it ends.

    For readers that see only some of the files (the tf.data service's `distributed_epoch` splits the files
    between its workers), where `check_pass` cannot tell an unread file from a missing one. Costs more per
    record than `read_records` + `check_pass` (docs/benchmarks.md).

    Args:
        file_triples: dataset of `(filename, file_size, file_index)` (see `file_dataset`).
        num_files: int, the number of files in `file_triples` (bounds the interleave cycle).
        skip_corrupt: bool; False raises an error naming a corrupt or truncated file, True skips the rest
            of that file, prints a warning and counts it in `skip_counter` (which must then be given).
        skip_counter: `SkipCounter` or None.
        num_parallel_reads: int or None, files read in parallel. None: min(num_files, 8).
        deterministic: bool, whether chunks of different files come in a fixed round-robin order.

    Returns:
        A dataset of `(records, record_indices, file_indices)`: at most `RECORDS_PER_CHUNK` records of one
        file (never empty), their indices in the file and the file's index.
    """
    if skip_corrupt and skip_counter is None:
        raise ValueError("skip_corrupt=True needs a skip_counter.")
    return file_triples.interleave(
        lambda filename, file_size, file_index: _read_file_chunks(
            filename, file_size, file_index, skip_corrupt=skip_corrupt, counter=skip_counter
        ),
        cycle_length=min(num_files, num_parallel_reads or DEFAULT_CYCLE_LENGTH),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )


def read_serialized_batches(
    file_pattern: str | Sequence[str],
    *,
    batch_size: int,
    skip_corrupt: bool = False,
    skip_counter: SkipCounter | None = None,
    num_parallel_reads: int | None = None,
) -> tf.data.Dataset:
    """Batches of serialized records in a deterministic order, for tools that parse them themselves.

    Corrupt or truncated files are handled as in `check_pass` (checked at the end of the data).

    Args:
        file_pattern: str glob (comma-separated globs allowed) or a sequence of globs.
        batch_size: int, records per batch (the last batch may be smaller).
        skip_corrupt: bool, skip the rest of corrupt files instead of raising. Defaults to False.
        skip_counter: optional `SkipCounter` (needed, and created if None, with skip_corrupt).
        num_parallel_reads: int, files read in parallel. Defaults to min(number of files, 8).

    Returns:
        A `tf.data.Dataset` of `(serialized, record_names)`, two string tensors `(batch,)`; the record
        names are "file:index".

    Raises:
        FileNotFoundError: no file matches a pattern (the message names it).
    """
    if skip_corrupt and skip_counter is None:
        skip_counter = SkipCounter()
    files = list_files(file_pattern)
    sizes = file_sizes(files)
    records = read_records(
        file_dataset(files, sizes),
        num_files=len(files),
        num_parallel_reads=num_parallel_reads,
        deterministic=True,
    )
    batches = check_pass(
        records.batch(batch_size), files, sizes, skip_corrupt=skip_corrupt, skip_counter=skip_counter
    )
    file_names = tf.constant(files, tf.string)
    batches = batches.filter(lambda records, _, __: tf.size(records) > 0)
    return batches.map(
        lambda records, record_indices, file_indices: (
            records,
            record_names(file_names, record_indices, file_indices),
        )
    ).prefetch(tf.data.AUTOTUNE)


def _read_file_chunks(filename, file_size, file_index, *, skip_corrupt: bool, counter: SkipCounter | None):
    """One file as chunks `(records, record_indices, file_indices)` of up to `RECORDS_PER_CHUNK` records.

    Checks at the end of the file that it was read whole.
    """
    chunks = tf.data.TFRecordDataset(filename).ignore_errors().batch(RECORDS_PER_CHUNK)
    # batch() never yields an empty chunk, so an empty one marks the end of the file.
    end_of_file = tf.data.Dataset.from_tensors(tf.zeros([0], tf.string))
    file_size = tf.cast(file_size, tf.int64)

    def count(state, records):
        num_records, num_bytes = state
        chunk_size = tf.size(records, out_type=tf.int64)
        is_end = tf.equal(chunk_size, 0)
        checks = _check_files(
            filename[tf.newaxis],
            file_size[tf.newaxis],
            is_end[tf.newaxis] & tf.not_equal(num_bytes, file_size)[tf.newaxis],
            num_records[tf.newaxis],
            num_bytes[tf.newaxis],
            skip_corrupt,
            counter,
        )
        record_indices = num_records + tf.range(chunk_size)
        chunk_bytes = tf.reduce_sum(tf.cast(tf.strings.length(records), tf.int64))
        chunk_bytes += _RECORD_FRAMING_BYTES * chunk_size
        with tf.control_dependencies(checks):
            is_end = tf.identity(is_end)
        file_indices = tf.fill([chunk_size], tf.cast(file_index, tf.int64))
        return (num_records + chunk_size, num_bytes + chunk_bytes), (
            records,
            record_indices,
            file_indices,
            is_end,
        )

    counted = chunks.concatenate(end_of_file).scan(
        (tf.constant(0, tf.int64), tf.constant(0, tf.int64)), count
    )
    return counted.filter(lambda records, indices, files, is_end: tf.logical_not(is_end)).map(
        lambda records, indices, files, is_end: (records, indices, files)
    )


def _check_files(file_names, file_sizes, incomplete, num_records, num_bytes, skip_corrupt, counter):
    """For the files flagged `incomplete` (bool per file): raise naming them, or with skip_corrupt warn
    about each and count them. The messages are built only when a file is incomplete. Returns the ops to
    depend on."""
    any_incomplete = tf.reduce_any(incomplete)

    def describe():
        bad = tf.reshape(tf.where(incomplete), [-1])
        return tf.strings.join(
            [
                "TFRecord file ",
                tf.gather(file_names, bad),
                " is corrupt or truncated: only its first ",
                tf.strings.as_string(tf.gather(num_records, bad)),
                " records (",
                tf.strings.as_string(tf.gather(num_bytes, bad)),
                " of ",
                tf.strings.as_string(tf.gather(file_sizes, bad)),
                " bytes) could be read.",
            ]
        )

    if not skip_corrupt:

        def fail():
            message = tf.strings.join(
                [
                    tf.strings.reduce_join(describe(), separator=" "),
                    " --skip_corrupt (skip_corrupt=True of make_dataset) skips the rest of such files.",
                ]
            )
            assertion = tf.debugging.Assert(tf.constant(False), [message], summarize=1)
            with tf.control_dependencies([assertion]):
                return tf.constant(False)

        return [tf.cond(any_incomplete, fail, lambda: tf.constant(True))]

    def skip():
        bad = tf.reshape(tf.where(incomplete), [-1])
        updates = [
            counter.corrupt_files.assign_add(tf.size(bad, out_type=tf.int64)),
            counter.unread_bytes.assign_add(tf.reduce_sum(tf.gather(file_sizes - num_bytes, bad))),
        ]
        lines = tf.strings.join(["W ac_keras.data: ", describe(), " Skipped the rest of the file."])
        warning = tf.print(tf.strings.reduce_join(lines, separator="\n"), output_stream=sys.stderr)
        with tf.control_dependencies([*updates, warning]):
            return tf.constant(False)

    return [tf.cond(any_incomplete, skip, lambda: tf.constant(True))]


def file_sha256(path, chunk_size: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes as 64 lowercase hex digits, read in chunks through `tf.io.gfile`.

    Args:
        path: str or path-like, a local or `tf.io.gfile` path (gs://...).
        chunk_size: int, bytes read at a time. Defaults to 1 MiB.

    Raises:
        MissingDataError: the file does not exist (or is a directory).
    """
    path = os.fspath(path)
    if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
        raise MissingDataError(f"Cannot hash {path}: no such file.")
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def write_text_atomically(path, text) -> None:
    """Writes `text` to `path` (local or `gs://`) through a temporary file renamed into place, so an
    interrupted write never leaves a half-written file under the final name."""
    temporary = f"{path}.tmp"
    with tf.io.gfile.GFile(temporary, "w") as handle:
        handle.write(text)
    tf.io.gfile.rename(temporary, path, overwrite=True)
