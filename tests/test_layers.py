"""The package's floors import only downward, and no module-level import circle exists.

Read from the source with ``ast`` (every ``import``, module level or inside a function), so the
check cannot be fooled by import order at run time.
"""

import ast
from collections import defaultdict
from pathlib import Path

import cotrain

ROOT = Path(cotrain.__file__).parent
FLOOR = {"errors": 0, "registry": 0, "seeding": 0, "runtime": 0, "models": 1, "data": 1, "privacy": 2,
         "aggregation": 3, "behaviours": 4, "federated": 5, "split": 5, "transfer": 5, "sampling": 5,
         "robust": 5, "audit": 6, "experiment": 7, "cli": 8}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported cotrain module, at module level?) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body} | {id(n) for s in tree.body if isinstance(s, ast.If) for n in s.body}
    out = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from pkg import submodule" imports the submodule, not the package's other parts
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name.startswith("cotrain.") and not _type_only(tree, node):
                out.append((name, id(node) in top))
    return out


def _all_modules() -> dict[str, Path]:
    return {".".join(("cotrain",) + p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in ROOT.rglob("*.py")}


MODULES = _all_modules()


def _type_only(tree: ast.Module, node: ast.AST) -> bool:
    for s in tree.body:
        if isinstance(s, ast.If) and "TYPE_CHECKING" in ast.unparse(s.test) and node in s.body:
            return True
    return False


def _modules() -> dict[str, Path]:
    return dict(MODULES)


def _floor(module: str) -> int:
    part = module.split(".")[1]
    assert part in FLOOR, f"{module}: package {part!r} has no floor in this test; add it"
    return FLOOR[part]


def test_every_import_goes_down_or_sideways():
    bad = []
    for mod, path in _modules().items():
        if mod == "cotrain":
            continue
        for target, _ in _imports(path):
            if _floor(target) > _floor(mod):
                bad.append(f"{mod} imports {target}")
    assert bad == []


def test_runtime_imports_nothing_above_itself():
    above = ("cotrain.experiment", "cotrain.federated", "cotrain.split", "cotrain.transfer", "cotrain.audit",
             "cotrain.models", "cotrain.data", "cotrain.aggregation", "cotrain.behaviours", "cotrain.privacy")
    found = [(m, t) for m, p in _modules().items() if m.startswith("cotrain.runtime")
             for t, _ in _imports(p) if t.startswith(above)]
    assert found == []


def test_no_module_level_import_circle():
    mods = _modules()
    graph = defaultdict(set)
    for mod, path in mods.items():
        for target, at_top in _imports(path):
            if at_top:
                while target not in mods and "." in target:  # "from pkg.mod import name" -> the module
                    target = target.rsplit(".", 1)[0]
                graph[mod].add(target)
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t] if t in stack else [m, t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(mods):
        if m not in state:
            visit(m, [m])
    assert cycles == []
