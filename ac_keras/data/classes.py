"""Class lists users give as CSV files: the names of the classes (`--class_names`).

Read by the `Task` (training stores the names with the model) and by `ac_keras.artifacts` (the copy stored
in a model_dir or an export); here, below both, so neither imports the other for it.
"""

import csv
import io

import tensorflow as tf

from ac_keras.errors import DataError, MissingDataError


def read_class_names(path, num_classes):
    """Reads a class names CSV: `index,name` rows, an optional header first.

    Args:
        path: str, local or `gs://`.
        num_classes: int; every index must lie in `0 .. num_classes - 1`.

    Returns:
        A tuple of `num_classes` names, "" for a class the file does not name.

    Raises:
        MissingDataError: the file does not exist.
        DataError: naming the file and line: not two columns, an index that is not an integer or out of
            range, an index or a name given twice, an empty name, or no class named at all.
    """
    if not tf.io.gfile.exists(path):
        raise MissingDataError(f"--class_names: {path} does not exist.")
    with tf.io.gfile.GFile(path, "r") as handle:
        text = handle.read().removeprefix("\ufeff")  # a byte order mark, as spreadsheets write
    names = [""] * num_classes
    lines_of_index, lines_of_name = {}, {}
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as error:
        raise DataError(f"{path}: not a readable CSV ({error}).") from None
    first = True
    for line, row in enumerate(rows, start=1):
        cells = [cell.strip() for cell in row]
        if not "".join(cells):
            continue
        if len(cells) != 2:
            raise DataError(f"{path}:{line}: expected two columns, index,name; got {row!r}.")
        index_text, name = cells
        try:
            index = int(index_text)
        except ValueError:
            if first:  # a header
                first = False
                continue
            raise DataError(f"{path}:{line}: the class index {index_text!r} is not an integer.") from None
        first = False
        if not 0 <= index < num_classes:
            raise DataError(
                f"{path}:{line}: class index {index} is out of range 0..{num_classes - 1} "
                f"(--num_classes={num_classes})."
            )
        if index in lines_of_index:
            raise DataError(
                f"{path}:{line}: class {index} is named again (first on line {lines_of_index[index]})."
            )
        if not name:
            raise DataError(f"{path}:{line}: class {index} has an empty name.")
        if name in lines_of_name:
            raise DataError(
                f"{path}:{line}: the name {name!r} is given again (first on line {lines_of_name[name]})."
            )
        lines_of_index[index], lines_of_name[name] = line, line
        names[index] = name
    if not lines_of_index:
        raise DataError(f"{path} names no class (expected index,name rows).")
    return tuple(names)


def format_class_names(names):
    """The CSV text of class names (a header, then `index,name` for each named class)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "name"])
    writer.writerows([index, name] for index, name in enumerate(names) if name)
    return buffer.getvalue()


def read_segment_classes(path, num_classes):
    """Reads the classes rated for segments: YouTube-8M's `segment_label_ids.csv` (`--segment_classes`).

    One class id a line, a header line (`Index`) optional first; blank lines are skipped. The starter's
    `inference.py` skips every line that is not an integer; here such a line after the header is an error.

    Args:
        path: str, local or `gs://`.
        num_classes: int; every class must lie in `0 .. num_classes - 1` (a class of the model).

    Returns:
        A tuple of the distinct class ids, in increasing order.

    Raises:
        MissingDataError: the file does not exist.
        DataError: naming the file and line: a line that is not one integer, a class that is not one of
            the model's, or no class at all.
    """
    if not tf.io.gfile.exists(path):
        raise MissingDataError(f"--segment_classes: {path} does not exist.")
    with tf.io.gfile.GFile(path, "r") as handle:
        text = handle.read().removeprefix("\ufeff")
    classes = set()
    first = True
    for line, raw in enumerate(text.splitlines(), start=1):
        cell = raw.strip()
        if not cell:
            continue
        try:
            class_id = int(cell)
        except ValueError:
            if first and "," not in cell:  # the header, e.g. "Index"
                first = False
                continue
            raise DataError(
                f"{path}:{line}: expected one class id a line (segment_label_ids.csv), got {raw!r}."
            ) from None
        first = False
        if not 0 <= class_id < num_classes:
            raise DataError(
                f"{path}:{line}: class {class_id} is not a class of the model (0..{num_classes - 1}, "
                f"--num_classes={num_classes})."
            )
        classes.add(class_id)
    if not classes:
        raise DataError(f"{path} lists no class (expected one class id a line, after an optional header).")
    return tuple(sorted(classes))
