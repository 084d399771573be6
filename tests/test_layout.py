"""The layout the README promises: engine/ in layers whose imports point one way, SQL and connections only in
the store package, no Streamlit in the engine, modules of a readable size, one registry of methods."""
import ast
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"
# lowest first: a package may import those before it (and engine.settings), never one after it
LAYERS = ("settings", "data", "store", "models", "training", "backends", "methods", "analysis", "lab")
MAX_MODULE_LINES = 600


def modules() -> dict[str, Path]:
    out = {}
    for f in ENGINE.rglob("*.py"):
        name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = f
    return out


def import_edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the engine modules it imports, at the top or inside functions (and import_module("...") calls)."""
    edges = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("engine"):
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args
                  and isinstance(node.args[0], ast.Constant)):
                names = [node.args[0].value]
            edges[m] |= {n for n in names if n in mods and n != m and n != "engine"}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


@pytest.mark.parametrize("edges, found", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),  # the mutant: one edge back makes a circle
    ({"a": {"b"}, "b": {"a"}, "c": {"c"}}, [["a", "b"]]),
])
def test_the_cycle_finder_finds_cycles(edges, found):
    assert cycles(edges) == found


def test_engine_has_no_import_circles_and_its_layers_point_one_way():
    edges = import_edges(modules())
    assert cycles(edges) == []
    upward = [(m, t) for m, ts in edges.items() for t in ts
              if layer(m) and layer(t) and LAYERS.index(layer(t)) > LAYERS.index(layer(m))]
    assert upward == [], upward
    assert len({layer(m) for m in edges if layer(m)}) == len(LAYERS)  # every layer exists (the test sees them all)


def test_connections_and_sql_live_in_the_store_package_only():
    outside = [f for f in list(ENGINE.rglob("*.py")) + list((ROOT / "pages").glob("*.py")) + [ROOT / "ui.py", ROOT / "app.py"]
               if "store" not in f.relative_to(ROOT).parts[:2]]
    for f in outside:
        tree = ast.parse(f.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "duckdb" not in imported, f"{f} imports duckdb"
        calls = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
        assert not calls & {"execute", "query"}, f"{f} runs SQL"
        text = f.read_text()
        for statement in ("SELECT ", "INSERT INTO", "UPDATE runs", "DELETE FROM"):
            assert statement not in text, f"{f} has SQL ({statement.strip()})"


def test_the_engine_never_imports_streamlit():
    for f in ENGINE.rglob("*.py"):
        assert "streamlit" not in f.read_text(), f


def test_modules_stay_readable():
    long = {str(f.relative_to(ROOT)): n for f in ENGINE.rglob("*.py") if (n := len(f.read_text().splitlines())) >
            MAX_MODULE_LINES}
    assert long == {}


def test_every_registered_method_has_its_function_and_declares_only_known_options():
    from engine.lab.checks import OPTIONS
    from engine.methods import registry
    for name, entry in registry.METHODS.items():
        fn = registry.function(name)
        assert callable(fn), name
        assert set(entry.options) <= set(OPTIONS), name
        assert (entry.adapter is None) == bool(entry.no_adapter), f"{name}: an adapter to export, or why there is none"
        assert entry.reads_train or not entry.stages, f"{name} trains without reading train examples"
    assert registry.known_methods()[-1] == "routed"  # methods that choose among the others run last


def test_the_local_and_the_ray_backend_offer_the_same_interface():
    from engine.backends.local import LocalBackend
    from engine.backends.ray import RayBackend

    def interface(cls):
        return {n: list(inspect.signature(f).parameters) for n, f in inspect.getmembers(cls, inspect.isfunction)
                if not n.startswith("_")}
    local, ray = interface(LocalBackend), interface(RayBackend)
    assert {"train", "evaluate", "describe", "close"} <= set(local)
    assert {n: local[n] for n in ("train", "evaluate")} == {n: ray[n] for n in ("train", "evaluate")}
    assert set(local) <= set(ray)


def test_the_public_api_is_whole_and_the_store_loads_no_model_code():
    """engine.__all__ resolves, and importing the store (as the dashboard's sidebar does) pulls in no torch."""
    import subprocess
    import sys
    code = ("import sys, engine.store; assert 'torch' not in sys.modules, 'torch'; import engine; "
            "[getattr(engine, n) for n in engine.__all__]; print(sorted(engine.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1500:]
    assert {"RunSpec", "execute_run", "StudySpec", "run_study", "load_dataset", "METHODS", "known_methods"} <= \
        set(eval(out.stdout))
