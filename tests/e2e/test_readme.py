"""The README's quick start runs as written against a LocalEngine, and the API
reference's client table (``docs/api.md``) matches the client's signatures."""

from __future__ import annotations

import inspect
import re
import threading
from pathlib import Path

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.runner.runner import Runner
from workflow_sdk.testing import LocalEngine

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
API = ROOT / "docs" / "api.md"


def quick_start_code() -> str:
    text = README.read_text()
    section = text.split("## Quick start: a worker", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the quick start has a python block"
    return match.group(1)


def test_quick_start_completes_an_instance() -> None:
    code = quick_start_code()
    # Everything but the last line (which blocks until SIGTERM), aimed at a
    # local engine.
    head, _, last = code.rstrip().rpartition("\n")
    assert last.startswith("Runner(client, registry")
    with LocalEngine() as engine:
        namespace: dict[str, object] = {}
        exec(head.replace("http://localhost:8080", engine.url), namespace)
        (instance,) = engine.instances()
        runner = Runner(namespace["client"], namespace["registry"], parallelism=8)  # type: ignore[arg-type]
        stop = threading.Event()
        thread = threading.Thread(target=runner.run, args=(stop,))
        thread.start()
        try:
            done = engine.wait_for_instance(instance["id"], "COMPLETED", timeout=15)
        finally:
            stop.set()
            thread.join(10)
        assert done["variables"]["score"] == 21
        assert not thread.is_alive()


def test_client_table_matches_the_signatures() -> None:
    section = API.read_text().split("## `workflow_sdk.client.rest.RestEngineClient`", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)\((.*?)\)` \|", section, re.M)
    assert len(rows) >= 16
    for name, args in rows:
        method = getattr(RestEngineClient, name)
        documented = [a.split("=")[0].strip() for a in args.split(",") if a.strip()]
        actual = [p for p in inspect.signature(method).parameters if p != "self"]
        assert documented == actual, name
