"""mkdocs hooks (``hooks:`` in mkdocs.yml): the site's generated parts.

- The home page is the repository's README.md and the changelog its
  CHANGELOG.md, so the site and the repository show the same front door.
- A page that links a repository file outside ``docs/`` (the example
  configuration, the systemd unit, ``examples/``) links a page generated for
  that file instead, so the link works on the site as it does on a Git host;
  a link to a file that does not exist is left as written, and the strict
  build fails on it.
- ``<!-- reference: NAME -->`` in a page becomes the reference that
  ``reference.py`` reads from the code (configuration keys, metrics, the
  command line, signals and exit statuses).

Nothing generated is written into the repository.
"""

from __future__ import annotations

import posixpath
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference

ROOT = Path(__file__).resolve().parents[2]

#: Site pages made from repository files: site path -> repository path.
_MADE: dict[str, str] = {}

_FENCE = re.compile(r"^(`{3,}|~{3,}).*?^\1[ \t]*$", re.M | re.S)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_LINK = re.compile(r"(\]\()([^)\s]+)(\))")
_LANGUAGES = {
    ".py": "python",
    ".toml": "toml",
    ".example": "toml",
    ".json": "json",
    ".yml": "yaml",
    ".yaml": "yaml",
    ".service": "ini",
    ".md": "markdown",
}
_SKIP_DIRS = {"__pycache__", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def site_path(repo_path: str) -> str | None:
    """Where the repository file or folder ``repo_path`` is on the site."""
    repo_path = repo_path.rstrip("/")
    if repo_path.startswith("docs/"):
        return repo_path.removeprefix("docs/")
    if repo_path in ("README.md", "docs"):
        return "index.md"
    if repo_path == "CHANGELOG.md":
        return "changelog.md"
    target = ROOT / repo_path
    if target.is_dir():
        return f"repo/{repo_path}/index.md"
    if target.is_file():
        return f"repo/{repo_path}" if repo_path.endswith(".md") else f"repo/{repo_path}.md"
    return None


def _outside_code(text: str, change: Callable[[str], str]) -> str:
    """``text`` with ``change`` applied to everything but code blocks and spans."""
    out: list[str] = []
    position = 0
    for fence in _FENCE.finditer(text):
        out.append(_outside_inline_code(text[position : fence.start()], change))
        out.append(fence.group(0))
        position = fence.end()
    out.append(_outside_inline_code(text[position:], change))
    return "".join(out)


def _outside_inline_code(text: str, change: Callable[[str], str]) -> str:
    out: list[str] = []
    position = 0
    for span in _INLINE_CODE.finditer(text):
        out.append(change(text[position : span.start()]))
        out.append(span.group(0))
        position = span.end()
    out.append(change(text[position:]))
    return "".join(out)


def _resolve(repo_page: str, target: str) -> tuple[str, str] | None:
    """(repository path, anchor) of a link in the page at ``repo_page``; None
    for links that are not to a repository file (web addresses, anchors)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return None
    path, _, anchor = target.partition("#")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(repo_page), path))
    if resolved.startswith("../"):
        return None
    return resolved, f"#{anchor}" if anchor else ""


def rewrite_links(markdown: str, repo_page: str, site_page: str) -> str:
    """Links of a page found at ``repo_page`` in the repository, made to work
    from ``site_page`` on the site."""

    def one(match: re.Match[str]) -> str:
        found = _resolve(repo_page, match.group(2))
        if found is None:
            return match.group(0)
        target = site_path(found[0])
        if target is None:
            return match.group(0)  # a missing file: the strict build says so
        relative = posixpath.relpath(target, posixpath.dirname(site_page) or ".")
        return f"{match.group(1)}{relative}{found[1]}{match.group(3)}"

    return _outside_code(markdown, lambda text: _LINK.sub(one, text))


def linked_files(markdown: str, repo_page: str) -> set[str]:
    """Repository paths outside ``docs/`` that the page links."""
    found: set[str] = set()

    def collect(text: str) -> str:
        for match in _LINK.finditer(text):
            resolved = _resolve(repo_page, match.group(2))
            if resolved and resolved[0] != "docs" and not resolved[0].startswith("docs/"):
                found.add(resolved[0])
        return text

    _outside_code(markdown, collect)
    return {path for path in found if (ROOT / path).exists()}


def _text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def _listing(repo_dir: str) -> tuple[str, list[str]]:
    """A folder's page, and the repository files it links."""
    base = ROOT / repo_dir
    files = sorted(
        p
        for p in base.rglob("*")
        if p.is_file()
        and not _SKIP_DIRS.intersection(p.relative_to(base).parts)
        and not any(part.startswith(".") for part in p.relative_to(base).parts)
        and _text_of(p) is not None
    )
    lines = [f"# `{repo_dir}/`", "", "The files of this folder of the repository:", ""]
    linked = []
    for path in files:
        relative = path.relative_to(base).as_posix()
        lines.append(f"- [`{relative}`]({relative})")
        linked.append(path.relative_to(ROOT).as_posix())
    return "\n".join(lines) + "\n", linked


def _code_page(repo_path: str) -> str:
    text = _text_of(ROOT / repo_path) or ""
    language = _LANGUAGES.get(Path(repo_path).suffix, "text")
    fence = "`" * max(3, max((len(m) for m in re.findall(r"`{3,}", text)), default=0) + 1)
    return (
        f"# `{repo_path}`\n\nThe file `{repo_path}` of the repository.\n\n"
        f"{fence}{language}\n{text.rstrip()}\n{fence}\n"
    )


def site_sources() -> dict[str, tuple[str, str]]:
    """Every page made from the repository: site path -> (repository path,
    Markdown). Starts from the README, the changelog and the links of
    ``docs/``, and follows the links of what it adds."""
    docs = ROOT / "docs"
    queue: list[str] = []
    for page in sorted(docs.rglob("*.md")):
        relative = page.relative_to(ROOT).as_posix()
        if "/_gen/" not in relative:
            queue.extend(linked_files(page.read_text(), relative))
    queue.extend(["README.md", "CHANGELOG.md"])
    made: dict[str, tuple[str, str]] = {}
    while queue:
        repo_path = queue.pop().rstrip("/")
        target = site_path(repo_path)
        if target is None or target in made:
            continue
        if (ROOT / repo_path).is_dir():
            markdown, files = _listing(repo_path)
            made[target] = (repo_path + "/index.md", markdown)
            queue.extend(files)
        elif repo_path.endswith(".md"):
            markdown = (ROOT / repo_path).read_text()
            made[target] = (repo_path, markdown)
            queue.extend(linked_files(markdown, repo_path))
        else:
            made[target] = (repo_path, _code_page(repo_path))
    return made


# -- the hooks ------------------------------------------------------------------------


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File, InclusionLevel  # noqa: PLC0415

    _MADE.clear()
    for target, (repo_path, markdown) in site_sources().items():
        if files.get_file_from_path(target) is not None:
            raise ValueError(f"docs/{target} exists and would hide {repo_path} on the site")
        _MADE[target] = repo_path
        # The repository's files are reached through links, not the navigation.
        inclusion = (
            InclusionLevel.NOT_IN_NAV if target.startswith("repo/") else InclusionLevel.INCLUDED
        )
        files.append(File.generated(config, target, content=markdown, inclusion=inclusion))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    site_page = page.file.src_uri
    repo_page = _MADE.get(site_page, f"docs/{site_page}")
    markdown = _outside_code(markdown, lambda text: reference.expand(text, repo_page))
    return rewrite_links(markdown, repo_page, site_page)
