"""The shape of server/, checked by `make lint`: no import circle between its modules, llama_cpp (and
llguidance, which loads it) imported only in the model's worker process (server/engine/worker/), and no
module over MAX_LINES lines. Exit 1 with what is wrong."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "server"
MAX_LINES = 350
ENGINE_ONLY = ("llama_cpp", "llguidance")
WORKER = "server.engine.worker"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The server modules `path` imports at module level, those for type checking included (a circle of
    types is a circle of design too)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body:
        for child in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(child, ast.Import):
                found |= {alias.name for alias in child.names}
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                found.add(child.module)
                found |= {f"{child.module}.{alias.name}" for alias in child.names}
    return {name for name in found if name in modules or name.split(".")[0] in ENGINE_ONLY}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules on it, if there is one."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def problems() -> list[str]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    out: list[str] = []
    graph: dict[str, set[str]] = {}
    for name, path in sorted(files.items()):
        imported = imports(path, set(files))
        engine = sorted(i for i in imported if i.split(".")[0] in ENGINE_ONLY)
        if engine and not name.startswith(WORKER):
            out.append(f"{path.relative_to(ROOT)} imports {', '.join(engine)}: only {WORKER} may")
        # A package's __init__ is imported before any of its modules: an edge to it is an edge to what it imports.
        graph[name] = {i for i in imported if i in files and i != name}
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            out.append(f"{path.relative_to(ROOT)} has {lines} lines (at most {MAX_LINES})")
    circle = cycle(graph)
    if circle:
        out.append("import circle: " + " -> ".join(circle))
    return out


if __name__ == "__main__":
    found = problems()
    for line in found:
        print(line)
    sys.exit(1 if found else 0)
