#!/usr/bin/env bash
# Bazel offline with Debian's Bazel 4.2.3 (docs/bazel.md): .ci/bazel.sh COMMAND [ARGUMENTS...]
#
# Installs Debian's bazel-bootstrap and bazel-rules-java when they are missing (apt-get, through sudo when not
# root), then runs `bazel COMMAND` with the virtual environment's interpreter as Bazel's Python toolchain.
#   AC_KERAS_PYTHON   interpreter of the virtual environment with requirements.txt installed
#                     (default: $PWD/.venv/bin/python, the README's and CI's .venv)
#   COMMAND           build, test, run, query, ... (a command that takes the build options below)
#   ARGUMENTS         passed on to `bazel COMMAND`, before the target pattern; default pattern //...
#                     e.g. .ci/bazel.sh build //...
#                          .ci/bazel.sh test //:entry_points_smoke_test      (what CI runs, after the build)
#                          .ci/bazel.sh test --test_tag_filters=-slow        (the fast tier)
set -euo pipefail
cd "$(dirname "$0")/.."

if (($# < 1)) || [[ "$1" == -* ]]; then
  echo "usage: .ci/bazel.sh COMMAND [ARGUMENTS...] (e.g. .ci/bazel.sh build //...)" >&2
  exit 2
fi
command="$1"
shift

python="${AC_KERAS_PYTHON:-$PWD/.venv/bin/python}"
case "$python" in
  /*) ;;
  *) python="$PWD/$python" ;;
esac
if [[ ! -x "$python" ]]; then
  echo "bazel.sh: no Python interpreter at $python; create .venv (README) or set AC_KERAS_PYTHON" >&2
  exit 1
fi

packages=()
command -v bazel >/dev/null 2>&1 || packages+=(bazel-bootstrap)
[[ -f /usr/share/bazel/rules/java/WORKSPACE ]] || packages+=(bazel-rules-java)
if ((${#packages[@]})); then
  sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    sudo=(sudo -n)
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache show "${packages[@]}" >/dev/null 2>&1; then
    "${sudo[@]}" apt-get update -q
  fi
  echo "bazel.sh: installing ${packages[*]}" >&2
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}"
fi

flags=(--repo_env=AC_KERAS_PYTHON="$python")

# A virtual environment inside the workspace (.venv) holds BUILD files of its own (TensorFlow ships two under
# site-packages/tensorflow/include) that `//...` would try to load, and fail on. A .bazelignore listing the
# environment is the standard fix; without one, they are named as deleted packages here.
for venv in */pyvenv.cfg .*/pyvenv.cfg; do
  [[ -f "$venv" ]] || continue
  venv="${venv%/pyvenv.cfg}"
  [[ "$venv" != . && "$venv" != .. ]] || continue
  if [[ -f .bazelignore ]] && grep -qxF -e "$venv" -e "$venv/" .bazelignore; then
    continue
  fi
  deleted="$(find -L "$venv" \( -name BUILD -o -name BUILD.bazel \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd, -)"
  if [[ -n "$deleted" ]]; then
    flags+=(--deleted_packages="$deleted")
  fi
done

targets=()
for argument in "$@"; do
  [[ "$argument" == -* ]] || targets+=("$argument")
done
if ((${#targets[@]})); then
  exec bazel "$command" "${flags[@]}" "$@"
fi
exec bazel "$command" "${flags[@]}" "$@" //...
