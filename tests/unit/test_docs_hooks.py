"""The site's hooks (``docs/_gen/hooks.py``): repository files get pages of
their own, and links are rewritten to reach them from the site, except in
code. The strict build checks the result; these pin the rules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_hooks() -> ModuleType:
    path = ROOT / "docs" / "_gen" / "hooks.py"
    spec = importlib.util.spec_from_file_location("docs_hooks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


hooks = load_hooks()


def test_where_repository_files_go() -> None:
    assert hooks.site_path("docs/kafka.md") == "kafka.md"
    assert hooks.site_path("README.md") == "index.md"
    assert hooks.site_path("docs") == "index.md"
    assert hooks.site_path("CHANGELOG.md") == "changelog.md"
    assert hooks.site_path("supervisor.toml.example") == "repo/supervisor.toml.example.md"
    assert hooks.site_path("examples/ml/README.md") == "repo/examples/ml/README.md"
    assert hooks.site_path("examples/") == "repo/examples/index.md"
    assert hooks.site_path("no/such/file.txt") is None


def test_links_are_rewritten_for_the_site() -> None:
    page = "See [the unit](../deploy/systemd/rochallor-supervisor.service) and [kafka](kafka.md#x)."
    out = hooks.rewrite_links(page, "docs/how.md", "how.md")
    assert "(repo/deploy/systemd/rochallor-supervisor.service.md)" in out
    assert "(kafka.md#x)" in out
    readme = "[Tests](docs/testing.md), [install](#install), [web](https://example.org/a.md)"
    out = hooks.rewrite_links(readme, "README.md", "index.md")
    assert out == "[Tests](testing.md), [install](#install), [web](https://example.org/a.md)"


def test_code_and_missing_files_are_left_alone() -> None:
    page = (
        "[gone](../no-such-file.toml) `[x](../supervisor.toml.example)`\n"
        "```md\n[y](../supervisor.toml.example)\n```\n"
    )
    assert hooks.rewrite_links(page, "docs/p.md", "p.md") == page


def test_every_repository_page_has_a_source() -> None:
    made = hooks.site_sources()
    assert made["index.md"][0] == "README.md"
    assert "repo/deploy/systemd/rochallor-supervisor.service.md" in made
    for target, (_repo_path, markdown) in made.items():
        assert markdown.strip(), target
        assert not target.startswith("repo/docs/"), target
