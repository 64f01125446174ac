"""Runs the PyTorch reference training step in bursts on command, so it can be interleaved with ours.

The model is the `Classifier` of /work/shared/benchmarks/peer_torch.py, imported from there; the step repeats
its `step()` line for line: forward, cross-entropy, backward, global-norm clipping to 5, RMSProp or Adam
step, on random in-memory data.
This process reads one line per burst from stdin, `<steps>`, runs that many steps and prints
`<seconds>`; an empty line or EOF ends it. The benchmarks start it once (with the torch venv's Python) and
alternate short bursts of it with bursts of ours, so the two see the same machine load; on a shared machine
that is what makes the ours/torch ratio meaningful.

    /work/torchvenv/bin/python benchmarks/torch_reference.py \
        --modalities=rgb:1536:64,flow:1536:32,audio:128:32 --classes=400 --frames=20 --batch=64 \
        --optimizer=rmsprop --dropout=0.9 --threads=2
"""

import argparse
import importlib.util
import sys
import time

PEER_TORCH = "/work/shared/benchmarks/peer_torch.py"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", default=PEER_TORCH, help="path of peer_torch.py")
    parser.add_argument("--modalities", required=True, help="name:dim:units,...")
    parser.add_argument("--classes", type=int, required=True)
    parser.add_argument("--frames", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--optimizer", default="rmsprop", choices=["rmsprop", "adam"])
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    spec = importlib.util.spec_from_file_location("peer_torch", args.peer)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    torch, nn = peer.torch, peer.nn

    torch.set_num_threads(args.threads)
    modalities = [(n, int(d), int(u)) for n, d, u in (m.split(":") for m in args.modalities.split(","))]
    model = peer.Classifier(modalities, args.classes, args.dropout)
    optimizer_class = torch.optim.RMSprop if args.optimizer == "rmsprop" else torch.optim.Adam
    optimizer = optimizer_class(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    inputs = {n: torch.randn(args.batch, args.frames, d, generator=generator) for n, d, _ in modalities}
    labels = torch.randint(0, args.classes, (args.batch,), generator=generator)

    def step():  # as in peer_torch.main
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(inputs), labels)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    for _ in range(args.warmup):
        step()
    print("ready", flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        steps = int(line)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        print(f"{time.perf_counter() - start:.6f}", flush=True)


if __name__ == "__main__":
    main()
