"""The example's scikit-learn model: a RandomForest trained on a generated data set.

Built once, ahead of time (``python -m examples.ml.build_model``), saved with
joblib under a cache directory, and loaded by ``examples.ml.handlers`` when
that module is imported, the way a real service loads its model. Nothing is
downloaded: the data set comes from ``sklearn.datasets.make_classification``
with a fixed seed, so every build of the same size gives the same model.

The default size (30,000 samples, 100 fully grown trees) makes a model of
about 65 MB on disk and a little more in memory: big enough that sharing one
copy between workers (``preload_handlers = true``) shows in their memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Overrides the cache directory (default: $XDG_CACHE_HOME or ~/.cache, then rochallor-sdk/ml).
CACHE_ENV = "ROCHALLOR_ML_CACHE"
#: Names the model file directly (the handlers load this one when it is set).
MODEL_ENV = "ROCHALLOR_ML_MODEL"

FEATURES = 20
CLASSES = 3


@dataclass(frozen=True)
class ModelSpec:
    """What to train; the file name says it, so differently sized models do not clash."""

    samples: int = 30_000
    trees: int = 100
    seed: int = 1

    def file_name(self) -> str:
        return f"forest-{self.samples}x{FEATURES}-{self.trees}trees-seed{self.seed}.joblib"


def cache_dir() -> Path:
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rochallor-sdk" / "ml"


def model_path(spec: ModelSpec | None = None) -> Path:
    """Where the model of ``spec`` lives (``$ROCHALLOR_ML_MODEL`` wins when set)."""
    explicit = os.environ.get(MODEL_ENV)
    if explicit and spec is None:
        return Path(explicit)
    return cache_dir() / (spec or ModelSpec()).file_name()


def generate_data(samples: int, seed: int) -> tuple[Any, Any]:
    """A three-class data set with 10% of the labels flipped (so trees grow deep)."""
    from sklearn.datasets import make_classification  # noqa: PLC0415 (heavy, only here)

    return make_classification(
        n_samples=samples,
        n_features=FEATURES,
        n_informative=10,
        n_classes=CLASSES,
        flip_y=0.1,
        random_state=seed,
    )


def train(spec: ModelSpec) -> Any:
    """Fit the forest on one thread (``n_jobs=1``; predictions then use one thread too)."""
    from sklearn.ensemble import RandomForestClassifier  # noqa: PLC0415

    features, labels = generate_data(spec.samples, spec.seed)
    forest = RandomForestClassifier(n_estimators=spec.trees, random_state=spec.seed, n_jobs=1)
    return forest.fit(features, labels)


def save(model: Any, path: Path) -> None:
    """Write atomically: a worker importing the handlers never sees half a file."""
    import joblib  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        joblib.dump(model, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def load(path: Path | None = None) -> Any:
    """The saved model; a missing file says how to build it."""
    import joblib  # noqa: PLC0415

    where = path or model_path()
    if not where.is_file():
        raise FileNotFoundError(
            f"the example model {where} does not exist: build it first with "
            "`python -m examples.ml.build_model` (set $ROCHALLOR_ML_CACHE to put it elsewhere)"
        )
    return joblib.load(where)


__all__ = [
    "CACHE_ENV",
    "CLASSES",
    "FEATURES",
    "MODEL_ENV",
    "ModelSpec",
    "cache_dir",
    "generate_data",
    "load",
    "model_path",
    "save",
    "train",
]
