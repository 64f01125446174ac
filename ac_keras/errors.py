"""Errors that are about what a user gave (flags, files, records, statistics), not about ac_keras.

The commands (`ac_keras.cli.run`) show these as a short message and exit with status 2; any other exception
is a bug and keeps its traceback. Each subclasses the built-in exception a caller would catch anyway.
"""

import re


class UserError(Exception):
    """Base of the errors a command shows as a short message (exit status 2) instead of a traceback."""


class UsageError(UserError, ValueError):
    """A flag or argument has a bad value; the message names the flag and what is allowed."""


class DataError(UserError, ValueError):
    """Records, statistics or other data a user gave are not what was expected; the message says where."""


class MissingDataError(DataError, FileNotFoundError):
    """A file or pattern a user named does not exist or matches nothing."""


class ConfigMismatchError(DataError):
    """A model_dir holds a run of another configuration than the one asked for."""


# TensorFlow wraps a failed `tf.debugging.Assert` of the input pipeline as
# "... assertion failed: [part] [part] ...\n\t [[{{node ...}}]] ...". The parts are our message.
_ASSERTION = re.compile(r"assertion failed: (.*?)\s*(?:\[\[\{\{node|\[Op:|$)", re.DOTALL)
_BRACKETED = re.compile(r"\[(.*?)\](?=\s*\[|\s*$)", re.DOTALL)


def assertion_message(text):
    """The message of an input-pipeline assertion inside a TensorFlow error text, or None.

    `"... assertion failed: [Modality rgb declares dim 16, found:] [8 8] [in video(s)] [v1] [records] [f:3]"`
    gives three lines: `"Modality rgb declares dim 16, found: 8 8"`, `"  in video(s) v1"`, `"  records f:3"`
    (a part that starts with "in " or is "records" opens a line).
    """
    match = _ASSERTION.search(text)
    if match is None:
        return None
    body = match.group(1).strip()
    parts = [part.strip() for part in _BRACKETED.findall(body)]
    if not parts:
        return body
    lines = [parts[0]]
    for part in parts[1:]:
        if part.startswith("in ") or part == "records":
            lines.append("  " + part)
        else:
            lines[-1] += " " + part
    return "\n".join(lines)
