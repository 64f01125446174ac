"""Code for test subprocesses that must run without ac_keras (an exported model served on its own)."""

# Prepended to a `python -c` script: any import of ac_keras in that process raises ImportError, whatever
# sys.path or PYTHONPATH hold, and the script stops at once if the block does not work.
BLOCK_AC_KERAS = """
import sys as _sys


class _BlockAcKeras:
    def find_spec(self, name, path=None, target=None):
        if name == "ac_keras" or name.startswith("ac_keras."):
            raise ImportError(f"{name} is blocked in this process")


_sys.meta_path.insert(0, _BlockAcKeras())
try:
    import ac_keras  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("the ac_keras import block did not work")
"""
