"""The chief of a distributed search: serves KerasTuner's oracle over gRPC until the search is over.

KerasTuner 1.4.8's own `keras_tuner.src.distribute.oracle_chief.start_server` polls every 20 s once the search
is over, and exits as soon as every worker that asked for a trial was told to stop, which can strand a
worker that connects late (its client waits up to an hour for an answer). This server is the same servicer
with a short poll and, optionally, a count of workers that must be told the search is over before it exits.
"""

import os
import time
from concurrent import futures

import grpc
from keras_tuner.src import protos
from keras_tuner.src.distribute import oracle_chief
from keras_tuner.src.engine import oracle as oracle_module
from keras_tuner.src.engine import trial as trial_module

POLL_SECONDS = 0.2
GRACE_SECONDS = 2.0


class _Servicer(oracle_chief.OracleServicer):
    """KerasTuner's oracle servicer that also remembers which workers were told the search is over."""

    def __init__(self, oracle):
        super().__init__(oracle)
        self.stopped_tuner_ids = set()

    def CreateTrial(self, request, context):  # noqa: N802 (gRPC method name)
        trial = self.oracle.create_trial(request.tuner_id)
        if trial.status == trial_module.TrialStatus.STOPPED:
            self.stop_triggered = True
            self.stopped_tuner_ids.add(request.tuner_id)
        return protos.get_service().CreateTrialResponse(trial=trial.to_proto())


@oracle_module.synchronized
def _snapshot(oracle):
    """Copies of all trials, taken while the servicer thread cannot change them."""
    return [trial_module.Trial.from_state(trial.get_state()) for trial in oracle.trials.values()]


def serve(oracle, num_workers=0, on_progress=None):
    """Serves `oracle` at KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT until the search is over.

    Args:
        oracle: the search's `keras_tuner.Oracle`.
        num_workers: int, workers that must have been told the search is over before the server stops;
            0 = only those that asked for a trial (KerasTuner's rule).
        on_progress: optional callable, called from this thread with a copy of all trials each time
            another trial ended, and once at the end.
    """
    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = _Servicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    if not server.add_insecure_port(address):
        raise RuntimeError(f"The oracle server cannot listen on {address}.")
    server.start()
    print(f"Oracle serving at {address}; waiting for workers.", flush=True)
    ended = len(oracle.end_order)
    try:
        while True:
            time.sleep(POLL_SECONDS)
            if on_progress is not None and len(oracle.end_order) != ended:
                ended = len(oracle.end_order)
                on_progress(_snapshot(oracle))
            if (
                servicer.stop_triggered
                and oracle_chief.exit_chief(oracle)
                and len(servicer.stopped_tuner_ids) >= num_workers
            ):
                break
    finally:
        # Lets the last worker's "search over" answer reach it before the server goes.
        server.stop(GRACE_SECONDS).wait()
    if on_progress is not None:
        on_progress(_snapshot(oracle))
