"""Train the example's RandomForest and save it under the cache directory.

    python -m examples.ml.build_model [--samples N] [--trees N] [--seed N] [--force]

Prints the path of the model file (what ``$ROCHALLOR_ML_MODEL`` may name).
An existing file of the same size and seed is kept unless ``--force``. Runs
on one thread, so it takes 10-20 s at the default size on a laptop's core.
Exit status: 0 built or already there, 2 bad usage, 3 scikit-learn missing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from examples.ml.model import ModelSpec, model_path, save, train


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    defaults = ModelSpec()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=_positive, default=defaults.samples)
    parser.add_argument("--trees", type=_positive, default=defaults.trees)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--force", action="store_true", help="train again over an existing file")
    args = parser.parse_args(argv)
    spec = ModelSpec(samples=args.samples, trees=args.trees, seed=args.seed)
    path = model_path(spec)
    if path.is_file() and not args.force:
        print(path)
        return 0
    # One thread for BLAS and OpenMP: a build next to running workers must not take every CPU.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    started = time.monotonic()
    try:
        model = train(spec)
    except ImportError as exc:
        print(f"build_model: {exc} (install the ml extra: pip install '.[ml]')", file=sys.stderr)
        return 3
    save(model, path)
    size_mb = path.stat().st_size / 1e6
    print(
        f"trained {spec.trees} trees on {spec.samples} samples in "
        f"{time.monotonic() - started:.1f} s; {size_mb:.1f} MB",
        file=sys.stderr,
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
