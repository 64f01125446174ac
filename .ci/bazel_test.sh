#!/usr/bin/env bash
# `bazel test` offline with Debian's Bazel 4.2.3 (docs/bazel.md): .ci/bazel.sh test, kept under this name.
#   .ci/bazel_test.sh                                   every test file under Bazel (//...)
#   .ci/bazel_test.sh --test_tag_filters=-slow          the fast tier (pytest -m "not slow")
#   .ci/bazel_test.sh --test_output=all //:tests/ac_keras/test_model
# AC_KERAS_PYTHON and the installation of Bazel: see .ci/bazel.sh.
set -euo pipefail
exec "$(dirname "$0")/bazel.sh" test "$@"
