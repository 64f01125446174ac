"""Bazel-only smoke test: every Bazel-built `py_binary` answers --helpfull from the runfiles tree.

Not a pytest test (tests/ runs under pytest, once, in CI; //:BUILD's py_test targets run it again under Bazel
for developers). This checks what only Bazel builds: the generated runpy launchers, the py_binary stubs and
the runfiles tree with every library and data file the commands need. It runs each binary's stub script from
this test's runfiles with the toolchain's interpreter and checks exit status 0 and that the output lists a
flag of that command. --helpfull, not --help: absl's --help lists only the flags defined in the main module,
and the training commands define theirs in a library module (`--help` exits the same way, with status 0).

Usage (what //:BUILD passes as `args`): entry_points_smoke_test.py <rootpath of a py_binary>=<flag> ...
"""

import concurrent.futures
import os
import subprocess
import sys

TIMEOUT_SECONDS = 300


def check(binary, flag):
    """Runs `binary --helpfull`; returns a list of problems (empty when it passed)."""
    if not os.path.isfile(binary):
        return [f"{binary}: not in the runfiles tree"]
    # The stub finds its runfiles from its own path (…/<test>.runfiles/<workspace>/<name>) and puts the
    # workspace on sys.path; run it with this interpreter, the toolchain's, as its shebang would.
    result = subprocess.run(
        [sys.executable, binary, "--helpfull"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    output = result.stdout + result.stderr
    problems = []
    if result.returncode != 0:
        problems.append(f"{binary} --helpfull: exit status {result.returncode}\n{output[-3000:]}")
    elif f"--{flag}" not in output:
        problems.append(f"{binary} --helpfull does not list --{flag}\n{output[-3000:]}")
    return problems


def main(argv):
    if not argv:
        print("usage: entry_points_smoke_test.py <binary>=<flag> ...", file=sys.stderr)
        return 2
    workspace = os.environ.get("TEST_SRCDIR") and os.path.join(
        os.environ["TEST_SRCDIR"], os.environ.get("TEST_WORKSPACE", "")
    )
    if workspace and os.path.isdir(workspace):
        os.chdir(workspace)  # rootpaths are relative to the workspace directory of the runfiles tree
    tmp = os.environ.get("TEST_TMPDIR")
    if tmp:
        # The sandbox mounts the real home directory read-only; Keras and matplotlib write under HOME.
        home = os.path.join(tmp, "home")
        os.makedirs(home, exist_ok=True)
        os.environ["HOME"] = home
        os.environ.setdefault("MPLCONFIGDIR", os.path.join(home, ".config", "matplotlib"))
    problems = []
    pairs = [argument.partition("=")[::2] for argument in argv]
    # One command per core at a time: each start is mostly importing TensorFlow, single-threaded.
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for (binary, flag), found in zip(pairs, pool.map(lambda pair: check(*pair), pairs), strict=True):
            print(f"{'FAIL' if found else 'ok'}  {binary} --helpfull (lists --{flag})", flush=True)
            problems += found
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
