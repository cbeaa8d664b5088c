"""CPU one poll + complete cycle costs the client, against a LocalEngine.

    .venv/bin/python scripts/client_cost.py [--cycles 1500]

Measures the calling thread's CPU time (``time.thread_time``), so the
engine's own work in this process is not counted; the wall time per cycle is
printed beside it.
"""

from __future__ import annotations

import argparse
import time

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine


def measure(cycles: int) -> tuple[float, float]:
    """(client CPU seconds, wall seconds) per poll+complete cycle."""
    with LocalEngine() as engine, RestEngineClient(engine.url) as client:
        client.upload_definition(
            {
                "id": "cost",
                "name": "cost",
                "steps": [
                    {
                        "id": "s",
                        "name": "s",
                        "type": "SERVICE_TASK",
                        "jobType": "cost",
                        "nextStep": "end",
                    },
                    {"id": "end", "name": "End", "type": "END"},
                ],
            }
        )
        for _ in range(cycles):
            client.start_instance("cost")
        cpu, wall = time.thread_time(), time.perf_counter()
        for _ in range(cycles):
            (job,) = client.poll_jobs("cost-worker", ["cost"], 1)
            client.complete_job(job["id"], "cost-worker", {"done": True})
        return (time.thread_time() - cpu) / cycles, (time.perf_counter() - wall) / cycles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=1500)
    cpu, wall = measure(parser.parse_args().cycles)
    print(f"client CPU per poll+complete cycle: {cpu * 1e6:.0f} us (wall {wall * 1e6:.0f} us)")


if __name__ == "__main__":
    main()
