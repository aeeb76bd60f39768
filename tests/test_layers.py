"""One-way imports: no import cycle between the repository's modules, no import against the layers.

Every ``.py`` file of the repository is parsed with ``ast`` (no module is imported), including the imports
inside functions and classes, and the module graph is built from them:

* ``import a.b.c`` and ``from a.b import c`` make an edge to the deepest repository module they name
  (``a.b.c`` when it is a module, else ``a.b``); relative imports are resolved against the importer's package;
  a script in a top-level folder (``tools/benchmark.py``) also imports from that folder;
* a package whose ``__init__`` re-exports names lazily (PEP 562 ``__getattr__`` reading a module-level
  ``{"name": "submodule"}`` table, as ``engine.utils`` does) has an edge to every submodule of that table,
  and ``from package import name`` makes an edge to the submodule that defines ``name``;
* imports of third-party modules are ignored, and so are imports by string (``importlib.import_module``),
  which the plugin registries use on purpose (``engine.data.registry`` imports ``datasets`` and ``demo``).

``LAYERS`` below is the one table of the rules; docs/ARCHITECTURE.md states the same in prose.
"""
import ast
import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The layers, lowest first: (importer, forbidden imports, exempt importers). A module name matches a prefix
#: when it is the prefix or lies under it (``engine`` matches ``engine.trainer``, not ``engineering``).
LAYERS = [
    # the engine: core machinery, knows no method, dataset, demo, plan or tool
    ("engine", ("trainers", "datasets", "demo", "repro", "compat", "tools", "train"), ("engine.api",)),
    # ... except its one entry point that builds a method's trainer for a dataset
    ("engine.api", ("demo", "repro", "compat", "tools", "train"), ()),
    # run artefacts (records, metrics, locks, log parsing) are read without the training machinery
    ("engine.runs", ("engine.trainer", "engine.api"), ()),
    # methods, dataset classes and the demo build on the engine only
    ("trainers", ("repro", "compat", "tools", "train"), ()),
    ("datasets", ("repro", "compat", "tools", "train"), ()),
    ("demo", ("repro", "compat", "tools", "train"), ()),
    # the Dassl compatibility layer runs foreign research code on the engine; it knows none of ours
    ("compat", ("trainers", "datasets", "demo", "repro", "tools", "train"), ()),
    # planning, execution and reporting of experiments; the tools and train.py sit on top of everything
    ("repro", ("tools", "train"), ()),
]

#: folders never scanned: build outputs, caches, run outputs, data, and the foreign-style research repo of the
#: Dassl runner's tests (its own ``train.py``, ``trainers``, ``datasets`` and ``clip``, run in its own process)
SKIP_DIRS = {"__pycache__", "build", "dist", "output", "data", "node_modules", "dassl_research_repo"}


def _under(name, prefix):
    return name == prefix or name.startswith(prefix + ".")


def _module_files(root):
    """``{module name: (path, is_package)}`` for every ``.py`` file under ``root`` (hidden folders skipped)."""
    modules = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS
                         and not d.endswith(".egg-info"))
        rel = os.path.relpath(folder, root)
        parts = [] if rel == "." else rel.split(os.sep)
        for file in sorted(files):
            if not file.endswith(".py"):
                continue
            path = os.path.join(folder, file)
            if file == "__init__.py":
                if parts:
                    modules[".".join(parts)] = (path, True)
            else:
                modules[".".join(parts + [file[:-3]])] = (path, False)
    return modules


def _lazy_exports(tree):
    """``{name: submodule}`` of a module defining PEP 562 ``__getattr__`` with a ``{str: str}`` table, else {}."""
    if not any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__" for node in tree.body):
        return {}
    table = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            pairs = list(zip(node.value.keys, node.value.values))
            if pairs and all(isinstance(k, ast.Constant) and isinstance(k.value, str)
                             and isinstance(v, ast.Constant) and isinstance(v.value, str) for k, v in pairs):
                table.update({k.value: v.value for k, v in pairs})
    return table


def build_graph(root=REPO_ROOT):
    """``(modules, edges)``: edges is ``{(importer, imported): "path:line"}`` over the repository's modules."""
    modules = _module_files(root)
    trees = {}
    for name, (path, _) in modules.items():
        with open(path, encoding="utf-8") as f:
            trees[name] = ast.parse(f.read(), filename=path)
    lazy = {name: _lazy_exports(tree) for name, tree in trees.items() if modules[name][1]}

    def deepest(dotted, script_dir=""):
        """The deepest repository module ``dotted`` names; a script in a top-level folder (``tools/``) also
        imports from its own folder (``sys.path[0]``), as ``<folder>.<dotted>``."""
        parts = dotted.split(".")
        for prefix in ([script_dir.split(".")] if script_dir else []) + [[]]:
            for n in range(len(parts), 0, -1):
                candidate = ".".join(prefix + parts[:n])
                if candidate in modules:
                    return candidate
        return None

    edges = {}

    def add(importer, target, where):
        if target is not None and target != importer:
            edges.setdefault((importer, target), where)

    for name, tree in trees.items():
        path, is_package = modules[name]
        package = name if is_package else name.rpartition(".")[0]
        # a top-level folder's module may be run as a script (``python tools/benchmark.py``), with its own
        # folder first on sys.path; a nested package's modules are never run that way
        script_dir = package if package and (package not in modules or "." not in package) else ""
        for (pkg, table) in lazy.items():
            if pkg == name:
                for sub in sorted(set(table.values())):
                    add(name, deepest(f"{pkg}.{sub}"), f"{os.path.relpath(path, root)} (lazy __getattr__)")
        for node in ast.walk(tree):
            where = f"{os.path.relpath(path, root)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(name, deepest(alias.name, script_dir), where)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".") if package else []
                    base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module
                for alias in node.names:
                    if not node.level and script_dir and deepest(source, script_dir) != deepest(source):
                        source = f"{script_dir}.{source}"  # a script importing from its own folder
                    full = f"{source}.{alias.name}" if source else alias.name
                    if full in modules:
                        add(name, full, where)
                        continue
                    add(name, deepest(source) if source else None, where)
                    if source in lazy and alias.name in lazy[source]:
                        add(name, deepest(f"{source}.{lazy[source][alias.name]}"), where)
    return modules, edges


def find_cycles(modules, edges):
    """Every strongly connected component of more than one module, each as one cycle ``[a, b, ..., a]``."""
    graph = {name: sorted(b for (a, b) in edges if a == name) for name in modules}
    index, low, stack, on_stack, components = {}, {}, [], set(), []
    counter = [0]

    def strongconnect(v):  # Tarjan, iterative
        work = [(v, iter(graph[v]))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph[w])))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    cycles = []
    for component in components:
        members = set(component)
        start = component[0]
        # shortest path from start back to start inside the component (breadth first)
        parents, frontier, found = {start: None}, [start], None
        while frontier and found is None:
            nxt = []
            for u in frontier:
                for w in graph[u]:
                    if w == start:
                        found = u
                        break
                    if w in members and w not in parents:
                        parents[w] = u
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path, u = [start], found
        while u is not None and u != start:
            path.insert(1, u)
            u = parents[u]
        cycles.append(path + [start])
    return cycles


def layer_violations(edges):
    """``[(importer, imported, where, rule)]`` for every edge that ``LAYERS`` forbids."""
    bad = []
    for (a, b), where in sorted(edges.items()):
        for importer, forbidden, exempt in LAYERS:
            if not _under(a, importer) or any(_under(a, e) for e in exempt):
                continue
            for target in forbidden:
                if _under(b, target):
                    bad.append((a, b, where, f"{importer} must not import {target}"))
    return bad


@pytest.fixture(scope="module")
def graph():
    return build_graph()


def test_the_graph_sees_the_repository(graph):
    modules, edges = graph
    # the scan finds the layers and the imports that cross them, function-level and lazy ones included
    for name in ("engine.trainer", "engine.api", "engine.runs.record", "trainers.coop", "repro.plan", "train",
                 "tools.sweep", "engine.utils.logger", "tools.benchmarking.cli"):
        assert name in modules, name
    assert ("tools.benchmark", "tools.benchmarking.cli") in edges  # a script importing from its own folder
    assert ("engine.api", "trainers") in edges or any(a == "engine.api" and _under(b, "trainers") for a, b in edges)
    assert ("tools.sweep", "repro.plan") in edges
    assert ("engine.utils", "engine.utils.logger") in edges  # the PEP 562 table


def test_graph_counts_function_level_relative_and_lazy_imports(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text(
        "_EXPORTS = {'f': 'low'}\n\ndef __getattr__(name):\n    return name\n")
    (tmp_path / "pkg" / "low.py").write_text("def f():\n    from pkg import high\n")
    (tmp_path / "pkg" / "high.py").write_text("from . import low\nfrom pkg import f\n")
    (tmp_path / "other.py").write_text("import pkg.high\n")
    modules, edges = build_graph(str(tmp_path))
    assert set(edges) == {("pkg", "pkg.low"), ("pkg.low", "pkg.high"), ("pkg.high", "pkg.low"),
                          ("pkg.high", "pkg"), ("other", "pkg.high")}
    assert edges[("pkg.low", "pkg.high")] == os.path.join("pkg", "low.py") + ":2"
    assert find_cycles(modules, edges) == [["pkg", "pkg.low", "pkg.high", "pkg"]]
    assert layer_violations({("engine.x", "repro.y"): "e.py:1", ("engine.api", "trainers.coop"): "a.py:2",
                             ("engine.api", "repro"): "a.py:3", ("trainers", "train"): "t.py:4",
                             ("trainers.x", "trainers"): "t.py:5"}) == [
        ("engine.api", "repro", "a.py:3", "engine.api must not import repro"),
        ("engine.x", "repro.y", "e.py:1", "engine must not import repro"),
        ("trainers", "train", "t.py:4", "trainers must not import train"),
    ]


def test_no_import_cycles(graph):
    modules, edges = graph
    cycles = find_cycles(modules, edges)
    lines = []
    for cycle in cycles:
        lines.append("cycle: " + " -> ".join(cycle))
        lines += [f"    {a} -> {b}  ({edges[(a, b)]})" for a, b in zip(cycle, cycle[1:])]
    assert not cycles, "import cycles between the repository's modules:\n" + "\n".join(lines)


def test_no_imports_against_the_layers(graph):
    _, edges = graph
    bad = layer_violations(edges)
    assert not bad, "imports against the layers (tests/test_layers.py LAYERS):\n" + "\n".join(
        f"    {a} -> {b}  ({where}): {rule}" for a, b, where, rule in bad)
