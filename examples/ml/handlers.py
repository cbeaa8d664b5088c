"""CPU-heavy handlers built on numerical libraries: numpy, scikit-learn, Pillow.

Three job types, the steps of ``examples/ml/workflow.json``:

- ``ml-matrix``: a 600 x 600 matrix product and its singular values (numpy;
  BLAS and LAPACK do the work, so the thread limits matter here most);
- ``ml-classify``: a batch of 500 rows classified by a RandomForest that was
  trained ahead of time (``python -m examples.ml.build_model``) and that this
  module loads when it is imported, as a real service would;
- ``ml-image``: a generated 1024 x 1024 grey image resized and blurred
  (Pillow).

Each job's input is generated from the instance's ``seed`` variable, so a
job is reproducible and nothing is downloaded. The handlers return numpy
values on purpose (scalars and small arrays): the SDK converts them to JSON
where that loses nothing.

Run them with the supervisor (``examples/ml/supervisor.toml``) after
building the model; see ``examples/ml/README.md``.
"""

from __future__ import annotations

import os
import zlib
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageStat

from examples.ml import model as model_files
from workflow_sdk import HandlerRegistry

registry = HandlerRegistry()

#: Job types, in workflow order.
JOB_TYPES = ("ml-matrix", "ml-classify", "ml-image")

#: Loaded at import: with ``preload_handlers = true`` the fork server loads it
#: once and every worker shares its pages; without, each worker loads a copy.
MODEL = model_files.load()


def _int_var(job: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    """An integer variable of the job, clamped so that no instance can run for minutes."""
    value = job["variables"].get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        value = default
    return max(low, min(high, int(value)))


def _rng(job: dict[str, Any], salt: str) -> np.random.Generator:
    """A generator seeded from the instance's ``seed`` (crc32: stable across processes)."""
    seed = job["variables"].get("seed", 0)
    return np.random.default_rng(zlib.crc32(f"{salt}:{seed}".encode()))


@registry.register("ml-matrix")
def matrix(job: dict[str, Any]) -> dict[str, Any]:
    """``A @ A.T`` of a random ``matrixSize`` square matrix, then its singular values."""
    size = _int_var(job, "matrixSize", 600, 2, 2000)
    a = _rng(job, "matrix").standard_normal((size, size))
    product = a @ a.T
    singular = np.linalg.svd(product, compute_uv=False)
    return {
        "matrixTrace": np.trace(product),  # numpy.float64
        "topSingularValues": singular[:3],  # a numpy array
        "matrixRank": np.linalg.matrix_rank(product, tol=1e-8 * singular[0]),  # numpy.int64
        "matrixWorkerPid": os.getpid(),
    }


@registry.register("ml-classify")
def classify(job: dict[str, Any]) -> dict[str, Any]:
    """Classify ``batchSize`` generated rows; report the class counts and the mean confidence."""
    rows = _int_var(job, "batchSize", 500, 1, 20_000)
    features = _rng(job, "classify").standard_normal((rows, model_files.FEATURES))
    probabilities = MODEL.predict_proba(features)
    predicted = probabilities.argmax(axis=1)
    return {
        "classCounts": np.bincount(predicted, minlength=model_files.CLASSES),  # int64 array
        "meanConfidence": probabilities.max(axis=1).mean(),  # numpy.float64
        "classifyWorkerPid": os.getpid(),
    }


@registry.register("ml-image")
def image(job: dict[str, Any]) -> dict[str, Any]:
    """Resize a generated ``imageSize`` square image to half, blur it, report its statistics."""
    size = _int_var(job, "imageSize", 1024, 8, 4096)
    noise = _rng(job, "image").integers(0, 256, size=(size, size), dtype=np.uint8)
    picture = Image.frombytes("L", (size, size), noise.tobytes())
    half = picture.resize((size // 2, size // 2), Image.Resampling.LANCZOS)
    blurred = half.filter(ImageFilter.GaussianBlur(radius=2))
    stats = ImageStat.Stat(blurred)
    return {
        "imageMean": round(stats.mean[0], 3),
        "imageStddev": round(stats.stddev[0], 3),
        "imageExtrema": list(blurred.getextrema()),
        "imageWorkerPid": os.getpid(),
    }


def _warm_up() -> None:
    """Run each handler once on a tiny input, at import.

    The first call of a library path does one-time work: modules imported
    lazily, caches, a BLAS buffer. Done here, with ``preload_handlers = true``
    it happens once in the fork server and every worker shares the result;
    done in each worker's first job, each worker pays for it in memory of
    its own (and the first job is slower)."""
    job: dict[str, Any] = {
        "variables": {"matrixSize": 8, "batchSize": 1, "imageSize": 8, "seed": 0}
    }
    matrix(job)
    classify(job)
    image(job)


_warm_up()


__all__ = ["JOB_TYPES", "MODEL", "classify", "image", "matrix", "registry"]
