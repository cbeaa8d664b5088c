"""CPU-heavy example handlers: real pure-Python work, no sleeps.

Each handler takes ~10-40 ms of one core, depending on the instance's
variables, and returns its worker's pid in ``<step>WorkerPid`` so that the
demo can show how the jobs were spread over the worker processes (every step
writes its own key: the engine merges variables shallowly, so one shared key
would keep only the last step's pid).

Run them with the supervisor::

    [supervisor]
    handlers = ["examples.handlers:registry"]
"""

from __future__ import annotations

import hashlib
import os
import random
import zlib
from typing import Any

from workflow_sdk import HandlerRegistry

registry = HandlerRegistry()

#: Job types, in workflow order (see ``examples/workflow.json``).
JOB_TYPES = ("count-primes", "hash-chain", "image-threshold")


def _int_var(job: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    """An integer variable of the job, clamped so that no instance can run for minutes."""
    value = job["variables"].get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        value = default
    return max(low, min(high, int(value)))


def sieve(limit: int) -> list[int]:
    """The primes below ``limit`` (sieve of Eratosthenes on a bytearray)."""
    if limit < 3:
        return []
    flags = bytearray([1]) * limit
    flags[0] = flags[1] = 0
    for n in range(2, int(limit**0.5) + 1):
        if flags[n]:
            flags[n * n :: n] = bytes(len(range(n * n, limit, n)))
    return [n for n in range(limit) if flags[n]]


@registry.register("count-primes")
def count_primes(job: dict[str, Any]) -> dict[str, Any]:
    """Count the primes below ``primeLimit`` and sum their last digits."""
    limit = _int_var(job, "primeLimit", 400_000, 10, 5_000_000)
    primes = sieve(limit)
    digit_sum = sum(p % 10 for p in primes)
    return {
        "primeCount": len(primes),
        "largestPrime": primes[-1] if primes else None,
        "primeDigitSum": digit_sum,
        "primesWorkerPid": os.getpid(),
    }


@registry.register("hash-chain")
def hash_chain(job: dict[str, Any]) -> dict[str, Any]:
    """SHA-256 the seed ``hashRounds`` times, each round over the previous digest."""
    rounds = _int_var(job, "hashRounds", 60_000, 1, 2_000_000)
    digest = f"{job['variables'].get('seed', 0)}:{job['variables'].get('primeCount', 0)}".encode()
    sha256 = hashlib.sha256
    for _ in range(rounds):
        digest = sha256(digest).digest()
    return {"chainDigest": digest.hex()[:16], "hashWorkerPid": os.getpid()}


def make_image(size: int, seed: int) -> list[list[int]]:
    """A ``size`` x ``size`` grey image (0-255) of noise over a smooth gradient."""
    rng = random.Random(seed)
    return [
        [min(255, (x + y) * 128 // size + rng.randrange(64)) for x in range(size)]
        for y in range(size)
    ]


def box_blur(image: list[list[int]]) -> list[list[int]]:
    """3x3 mean filter; edge pixels average the neighbours that exist."""
    height, width = len(image), len(image[0])
    out: list[list[int]] = []
    for y in range(height):
        rows = image[max(0, y - 1) : y + 2]
        line: list[int] = []
        for x in range(width):
            lo, hi = max(0, x - 1), x + 2
            total = count = 0
            for row in rows:
                window = row[lo:hi]
                total += sum(window)
                count += len(window)
            line.append(total // count)
        out.append(line)
    return out


@registry.register("image-threshold")
def image_threshold(job: dict[str, Any]) -> dict[str, Any]:
    """Blur a generated image, threshold it at its mean, report the bright share."""
    size = _int_var(job, "imageSize", 120, 4, 1024)
    seed = job["variables"].get("seed", 0)
    # crc32, not hash(): str hashes differ between processes (PYTHONHASHSEED).
    image_seed = zlib.crc32(f"{seed}:{job['variables'].get('chainDigest', '')}".encode())
    image = box_blur(make_image(size, image_seed))
    pixels = [value for row in image for value in row]
    mean = sum(pixels) / len(pixels)
    bright = sum(1 for value in pixels if value > mean)
    return {
        "brightPixels": bright,
        "brightRatio": round(bright / len(pixels), 4),
        "imageWorkerPid": os.getpid(),
    }


__all__ = [
    "JOB_TYPES",
    "box_blur",
    "count_primes",
    "hash_chain",
    "image_threshold",
    "make_image",
    "registry",
    "sieve",
]
