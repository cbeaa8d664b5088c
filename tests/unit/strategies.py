"""Hypothesis strategies the property tests share: any JSON value, a job as
the engine sends it, and a damaged one."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Any JSON value: scalars (huge integers, long and odd text included) and
# nested lists and objects.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=300)
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=30,
)
JOB_KEYS = (
    "id",
    "jobType",
    "instanceId",
    "stepExecutionId",
    "retriesRemaining",
    "variables",
    "lockedAt",
    "lockExpiresAt",
    "createdAt",
    "status",
    "workerId",
)
TIMESTAMPS = st.sampled_from(
    [
        "2026-01-01T00:00:30Z",
        "2026-01-01T01:00:30.123456+01:00",
        "2026-01-01T00:00:30.5-07:30",
    ]
)


@st.composite
def good_jobs(draw: st.DrawFn) -> dict[str, Any]:
    """A job as the engine sends it (optional fields present or not)."""
    job: dict[str, Any] = {
        "id": draw(st.text(min_size=1, max_size=40)),
        "jobType": draw(st.text(min_size=1, max_size=40)),
        "instanceId": draw(st.text(min_size=1, max_size=40)),
    }
    if draw(st.booleans()):
        job["retriesRemaining"] = draw(st.integers(min_value=-5, max_value=2**40))
    if draw(st.booleans()):
        job["variables"] = draw(st.none() | st.dictionaries(st.text(max_size=10), JSON, max_size=4))
    if draw(st.booleans()):
        job["lockedAt"] = "2026-01-01T00:00:00Z"
        job["lockExpiresAt"] = draw(TIMESTAMPS)
    if draw(st.booleans()):
        job["stepExecutionId"] = draw(st.text(max_size=30))
    return job


@st.composite
def damaged_jobs(draw: st.DrawFn) -> Any:
    """A job with one field of a wrong type or missing, or not a job at all."""
    if draw(st.booleans()):
        return draw(JSON)
    job = draw(good_jobs())
    key = draw(st.sampled_from(JOB_KEYS))
    if draw(st.booleans()):
        job.pop(key, None)
    else:
        job[key] = draw(JSON)
    return job
