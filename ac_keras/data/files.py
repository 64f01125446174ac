"""Files: listing TFRecord files and reading them as chunks of serialized records with byte accounting.

Files are listed with `tf.io.gfile` (so `gs://` works). Each file is read with `ignore_errors()` and the
bytes consumed are counted (a TFRecord costs its length + 16 bytes of framing); at the end of each file the
count is compared with the file size. A shortfall raises an error naming the file, or with
`skip_corrupt=True` skips the rest of that file and counts it in a `SkipCounter`. Files are read in chunks
of records, so the bookkeeping runs once per chunk, not once per record.
"""

import concurrent.futures
import hashlib
import os
import sys
from collections.abc import Sequence

import tensorflow as tf
from absl import logging

from ac_keras.errors import MissingDataError

# A TFRecord stores length (8 bytes), CRC of length (4), data, CRC of data (4).
_RECORD_FRAMING_BYTES = 16
DEFAULT_CYCLE_LENGTH = 8
# Records per chunk read from one file; bookkeeping (byte counts, names) runs once per chunk.
RECORDS_PER_CHUNK = 16


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


def file_dataset(files: Sequence[str]) -> tf.data.Dataset:
    """A dataset of `(filename, file_size)` pairs, one per file, in the given order.

    A zero-byte file holds no record: it is read as empty, with a warning naming it.
    """
    sizes = file_sizes(files)
    for filename, size in zip(files, sizes, strict=True):
        if size == 0:
            logging.warning("Record file %s is empty (0 bytes): it holds no records.", filename)
    return tf.data.Dataset.from_tensor_slices((list(files), sizes))


def read_chunks(
    file_pairs: tf.data.Dataset,
    *,
    num_files: int,
    skip_corrupt: bool,
    skip_counter: SkipCounter | None,
    num_parallel_reads: int | None,
    deterministic: bool,
) -> tf.data.Dataset:
    """Reads the files of `file_pairs` in parallel as chunks of records.

    Args:
        file_pairs: dataset of `(filename, file_size)` (see `file_dataset`).
        num_files: int, the number of files in `file_pairs` (bounds the interleave cycle).
        skip_corrupt: bool; False raises an error naming a corrupt or truncated file, True skips the rest
            of that file, prints a warning and counts it in `skip_counter` (which must then be given).
        skip_counter: `SkipCounter` or None.
        num_parallel_reads: int or None, files read in parallel. None: min(num_files, 8).
        deterministic: bool, whether chunks of different files come in a fixed round-robin order.

    Returns:
        A dataset of `(records, record_names)`: string tensors `(None,)` of at most `RECORDS_PER_CHUNK`
        records of one file, never empty; names are "file:index" with the record's index in its file.
    """
    if skip_corrupt and skip_counter is None:
        raise ValueError("skip_corrupt=True needs a skip_counter.")
    return file_pairs.interleave(
        lambda filename, file_size: _read_file_chunks(
            filename, file_size, skip_corrupt=skip_corrupt, counter=skip_counter
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

    Corrupt or truncated files are handled as in `read_chunks`.

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
    chunks = read_chunks(
        file_dataset(files),
        num_files=len(files),
        skip_corrupt=skip_corrupt,
        skip_counter=skip_counter,
        num_parallel_reads=num_parallel_reads,
        deterministic=True,
    )
    return chunks.rebatch(batch_size).prefetch(tf.data.AUTOTUNE)


def _read_file_chunks(filename, file_size, *, skip_corrupt: bool, counter: SkipCounter | None):
    """One file as chunks `(records, names)` of up to `RECORDS_PER_CHUNK` records; names are "file:index".

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
        checks = _check_file_end(filename, file_size, is_end, num_records, num_bytes, skip_corrupt, counter)
        names = tf.strings.join([filename, ":", tf.strings.as_string(num_records + tf.range(chunk_size))])
        chunk_bytes = tf.reduce_sum(tf.cast(tf.strings.length(records), tf.int64))
        chunk_bytes += _RECORD_FRAMING_BYTES * chunk_size
        with tf.control_dependencies(checks):
            is_end = tf.identity(is_end)
        return (num_records + chunk_size, num_bytes + chunk_bytes), (records, names, is_end)

    counted = chunks.concatenate(end_of_file).scan(
        (tf.constant(0, tf.int64), tf.constant(0, tf.int64)), count
    )
    return counted.filter(lambda records, names, is_end: tf.logical_not(is_end)).map(
        lambda records, names, is_end: (records, names)
    )


def _check_file_end(filename, file_size, is_end, num_records, num_bytes, skip_corrupt, counter):
    """At the end of a file (`is_end`), raise if it was not read whole, or with skip_corrupt count it.

    Returns the ops to depend on.
    """
    truncated = is_end & tf.not_equal(num_bytes, file_size)
    description = tf.strings.join(
        [
            "TFRecord file ",
            filename,
            " is corrupt or truncated: only its first ",
            tf.strings.as_string(num_records),
            " records (",
            tf.strings.as_string(num_bytes),
            " of ",
            tf.strings.as_string(file_size),
            " bytes) could be read.",
        ]
    )
    if not skip_corrupt:
        message = tf.strings.join(
            [
                description,
                " --skip_corrupt (skip_corrupt=True of make_dataset) skips the rest of such files.",
            ]
        )
        assertion = tf.debugging.Assert(tf.logical_not(truncated), [message], summarize=1)
        return [] if assertion is None else [assertion]

    def skip():
        updates = [
            counter.corrupt_files.assign_add(1),
            counter.unread_bytes.assign_add(file_size - num_bytes),
        ]
        warning = tf.print(
            "W ac_keras.data:", description, "Skipped the rest of the file.", output_stream=sys.stderr
        )
        with tf.control_dependencies([*updates, warning]):
            return tf.constant(False)

    return [tf.cond(truncated, skip, lambda: tf.constant(True))]


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
