"""The package's modules import each other without a cycle, and the bottom layers (models, data,
noise, io) import nothing above them: a cycle makes a module's import order matter and hides
which layer depends on which. The stages (stages/) sit above what they use (models, data, labels,
train, evaluate, the run contract) and below the pipeline and the plan, their only users."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "src" / "noisystudent"
BOTTOM_LAYERS = ("models", "data", "noise", "io")
ABOVE_THE_BOTTOM = ("config", "labels", "train", "evaluate", "pipeline", "plan", "runs", "session", "stages", "cli")
ABOVE_THE_STAGES = ("pipeline", "plan", "cli")


def module_name(path: Path) -> str:
    parts = ("noisystudent", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules `path` imports when it runs: function bodies included, `if
    TYPE_CHECKING:` blocks left out; importing a.b.c also runs a.b's __init__ (unless the
    importer is inside a.b, which is then already importing)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and getattr(block.test, "id", None) == "TYPE_CHECKING" for node in ast.walk(block)}
    targets = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            source = ".".join(part for part in (base, node.module) if part)
            targets |= {f"{source}.{alias.name}" for alias in node.names} | {source}
        elif isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
    found = set()
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        while target and target != "noisystudent" and target != name and not name.startswith(target + "."):
            if target in modules:
                found.add(target)
            target = target.rpartition(".")[0]
    return found


def import_graph() -> dict[str, set[str]]:
    paths = [path for path in PACKAGE.rglob("*.py") if path != PACKAGE / "__init__.py"]  # the façade imports all
    modules = {module_name(path) for path in paths}
    return {module_name(path): runtime_imports(path, modules) for path in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_of_the_package_imports_itself_through_others():
    assert cycles(import_graph()) == []


def test_the_bottom_layers_import_nothing_above_them():
    graph = import_graph()
    for module, imported in graph.items():
        if module.split(".")[1] in BOTTOM_LAYERS:
            upward = sorted(target for target in imported if target.split(".")[1] in ABOVE_THE_BOTTOM)
            assert not upward, f"{module} imports {upward}"


def test_only_the_pipeline_and_the_plan_import_the_stages_and_the_stages_import_neither():
    graph = import_graph()
    for module, imported in graph.items():
        layer = module.split(".")[1]
        if layer not in ABOVE_THE_STAGES and layer != "stages":
            assert not [target for target in imported if target.split(".")[1] == "stages"], module
        if layer == "stages":
            upward = sorted(target for target in imported if target.split(".")[1] in ABOVE_THE_STAGES)
            assert not upward, f"{module} imports {upward}"
    assert "noisystudent.stages" in graph["noisystudent.plan"] and "noisystudent.pipeline" not in graph["noisystudent.plan"]


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
