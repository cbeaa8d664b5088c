"""CPU one poll + complete cycle costs each client, against one LocalEngine.

    .venv/bin/python benchmarks/client_cost.py [--cycles 1500] [--rounds 3]

Measures the calling thread's CPU time (``time.thread_time``), so the
engine's own work in this process is not counted; the wall time per cycle is
printed beside it. ``RestEngineClient`` (requests) and ``LeanJobClient``
(http.client) run in alternating blocks on the same engine, so both see the
same machine load; each figure is the median of its blocks.
"""

from __future__ import annotations

import argparse
import statistics
import time

from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.client.lean import LeanJobClient
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

DEFINITION = {
    "id": "cost",
    "name": "cost",
    "steps": [
        {"id": "s", "name": "s", "type": "SERVICE_TASK", "jobType": "cost", "nextStep": "end"},
        {"id": "end", "name": "End", "type": "END"},
    ],
}


def _block(client: WorkerEngineClient, cycles: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per poll+complete cycle over ``cycles`` jobs."""
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(cycles):
        (job,) = client.poll_jobs("cost-worker", ["cost"], 1)
        client.complete_job(job["id"], "cost-worker", {"done": True})
    return (time.thread_time() - cpu) / cycles, (time.perf_counter() - wall) / cycles


def measure(cycles: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Client name -> (median CPU seconds, median wall seconds) per cycle."""
    with (
        LocalEngine() as engine,
        RestEngineClient(engine.url) as rest,
        LeanJobClient(engine.url) as lean,
    ):
        rest.upload_definition(DEFINITION)
        clients: dict[str, WorkerEngineClient] = {"requests": rest, "http.client": lean}
        for _ in range(cycles * rounds * len(clients)):
            rest.start_instance("cost")
        # One unmeasured cycle each: connections opened, code paths warm.
        for client in clients.values():
            _block(client, 1)
            rest.start_instance("cost")
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
        for _ in range(rounds):
            for name, client in clients.items():
                samples[name].append(_block(client, cycles))
        return {
            name: (
                statistics.median(cpu for cpu, _ in runs),
                statistics.median(wall for _, wall in runs),
            )
            for name, runs in samples.items()
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=1500, help="cycles per block")
    parser.add_argument("--rounds", type=int, default=3, help="blocks per client")
    args = parser.parse_args()
    results = measure(args.cycles, args.rounds)
    print("client CPU per poll+complete cycle (median of blocks, same engine):")
    for name, label in (("requests", "RestEngineClient"), ("http.client", "LeanJobClient")):
        cpu, wall = results[name]
        print(f"  {label:<17} {cpu * 1e6:6.0f} us  (wall {wall * 1e6:.0f} us)")
    ratio = results["http.client"][0] / results["requests"][0]
    print(f"  LeanJobClient / RestEngineClient CPU: {ratio:.2f}")


if __name__ == "__main__":
    main()
