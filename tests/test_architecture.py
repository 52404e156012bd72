"""The shape of the code: folders by stage, the library apart from the command line, no import
cycles, and the README's Python API and docs/architecture.md kept true.

    .venv/bin/pytest tests/test_architecture.py
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curation", "train")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module `name` imports, at the top or inside a function (both can close a loop)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb from this module's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in modules else base)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {d for d in _imports(name, path, modules) if d in modules and d != name}
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted.

    >>> cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}})
    [['a', 'b']]
    >>> cycles({"a": {"b"}, "b": set()})
    []
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 60  # the scan saw the project, not an empty folder
    assert cycles(graph) == []


def test_library_never_imports_the_command_line():
    """typer and rich (and any command module) only from a cli.py: the library reports
    progress through curation/core/stage.py and draws nothing."""
    offenders = []
    modules = _modules()
    for name, path in modules.items():
        if path.name == "cli.py":
            continue
        for dep in _imports(name, path, modules):
            top = dep.split(".")[0]
            if top in ("typer", "rich") or dep.endswith(".cli") or dep.endswith("_cli"):
                offenders.append(f"{path.relative_to(ROOT)} imports {dep}")
    assert offenders == []


def test_architecture_doc_names_only_folders_and_files_that_exist():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:curation|train)/[\w/]*?\w(?:\.\w+)?/?)`", doc))
    assert len(named) >= 10, named
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert missing == []
    # every stage folder of the code is on the map
    folders = {f"curation/{p.name}/" for p in (ROOT / "curation").iterdir()
               if p.is_dir() and (p / "__init__.py").exists()}
    folders |= {f"train/{p.name}/" for p in (ROOT / "train").iterdir()
                if p.is_dir() and (p / "__init__.py").exists()}
    assert folders - named == set()


def _readme_python_api() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) >= 2, "the README's Python API section lost its examples"
    return blocks


# `EXPRESSION   # 'value'` or `# (a, b): why`: a line whose comment says what it evaluates to.
_CLAIM = re.compile(r"^(?P<expr>[^#=\n]+?)\s+# (?P<want>'[^']*'|\([^)]*\))", re.M)


def test_readme_python_api_examples_run(tmp_path, monkeypatch):
    """The README's Python API section, run as written: the first block on a small synthetic
    run (its `recipe.yaml` points at the scripted teacher), every block in one namespace, and
    each line whose comment states a value evaluates to that value."""
    import yaml

    from curation.demo import DEMO_RECIPE
    from curation.synthetic.teacher import TeacherServer
    from curation.synthetic.world import make_world

    monkeypatch.chdir(tmp_path)
    make_world(tmp_path / "world", classes=6, per_class=10, seed=0, size=64)
    blocks = _readme_python_api()
    namespace: dict = {}
    with TeacherServer(world=str(tmp_path / "world"), latency=0.0) as teacher:
        recipe = yaml.safe_load(DEMO_RECIPE.read_text())
        recipe["run_dir"] = str(tmp_path / "runs" / "readme")
        recipe["sources"][0]["root"] = str(tmp_path / "world")
        recipe["teacher"]["base_urls"] = [teacher.base_url]
        (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        for i, block in enumerate(blocks):
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
    assert namespace["run"].path("dataset").exists()
    assert namespace["report"].cached > 0  # the stage rerun after run_recipe asked the ledger
    assert namespace["funnel"]["drafts"] > 0
    claims = [m for block in blocks for m in _CLAIM.finditer(block)]
    assert len(claims) >= 3
    for claim in claims:
        got = eval(claim["expr"], namespace)  # noqa: S307 - the README's own example
        assert repr(got) == claim["want"], claim["expr"]
