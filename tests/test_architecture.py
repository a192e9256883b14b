"""The package's shape: stages as packages, imports that only point down, one owner of the run folder.

Read from the source with ``ast`` (nothing is imported), so a function-level import counts like any other.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tunelab
from tunelab.rundir import RunDir

PACKAGE = Path(tunelab.__file__).parent
MAX_TOP_LEVEL_MODULES = 12


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_modules(name: str) -> set[str]:
    """The tunelab modules ``name`` imports anywhere in its source (package ``__init__`` files left out:
    importing ``tunelab.x.y`` is an edge to ``y``, not to the package)."""
    path, found = MODULES[name], set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = name.split(".")
            if node.level:
                base = base[: len(base) - node.level + (path.name == "__init__.py")]
            prefix = ".".join(base + [node.module] if node.level else [node.module or ""]).strip(".")
            targets = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and MODULES[target].name != "__init__.py":
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle once, as the path that closes it (depth-first search over the graph)."""
    state, stack, found = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_its_way_back_to_itself():
    graph = {name: imported_modules(name) for name in MODULES}
    assert sum(map(len, graph.values())) > 100, "the import graph must be read"
    assert cycles(graph) == []


def test_stages_are_packages_and_few_modules_sit_at_the_top():
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    for stage in ("config", "data", "models", "training", "evaluation", "quantization", "serving", "studies", "studio",
                  "cli"):
        assert (PACKAGE / stage / "__init__.py").exists(), stage


def run_folder_file_names() -> set[str]:
    """The file names RunDir gives out (folder names such as ``model`` are common words, so only files)."""
    run = RunDir("/run")
    paths = [getattr(run, name) for name in dir(RunDir) if isinstance(getattr(RunDir, name), property)]
    names = {p.name for p in paths if isinstance(p, Path)}
    return {name for name in names if "." in name or name.isupper()} | {"checkpoints", "tokenized"}


def test_only_rundir_spells_the_run_folder_file_names():
    names = run_folder_file_names()
    assert {"metrics.json", "config.yaml", "COMPLETE", "train_log.jsonl", "data_report.json"} <= names
    spelled = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names and name != "tunelab.rundir":
                spelled.setdefault(name, set()).add(node.value)
    assert spelled == {}


def test_rundir_names_every_path_in_a_run_folder():
    run = RunDir("/r")
    assert run.metrics_path == Path("/r/metrics.json") and run.tokenized_dir == Path("/r/data/tokenized")
    assert run.split_path("test") == Path("/r/data/test.jsonl")
    assert run.variant_dir("nf4") == Path("/r/quantized/nf4") and run.variant_dir(None) == Path("/r/adapter")
    assert run.outputs_dir(None) == Path("/r") and run.outputs_dir("nf4") == Path("/r/quantized/nf4")


def test_a_full_fine_tuning_run_has_its_model_where_the_adapter_would_be(tmp_path):
    run = RunDir(tmp_path)
    assert run.variant_dir("merged") == tmp_path / "merged"
    run.model_dir.mkdir()
    assert run.variant_dir(None) == run.variant_dir("merged") == tmp_path / "model"
    assert run.outputs_dir("merged") == tmp_path


@pytest.mark.parametrize("old, new", [("train", "tunelab.training.train"), ("runs", "tunelab.rundir"),
                                      ("quantize_compare", "tunelab.quantization.compare"),
                                      ("serve", "tunelab.serving"), ("serve.api", "tunelab.serving.api"),
                                      ("app", "tunelab.studio.app"), ("serving.app", "tunelab.studio.app")])
def test_old_import_paths_give_the_module_at_its_new_place(old, new):
    code = (f"import importlib, tunelab; b = importlib.import_module('tunelab.{old}'); "
            f"new = importlib.import_module('{new}'); assert b is new and new.__spec__.name == '{new}', (b, new)")
    if "." not in old:
        code += f"; from tunelab import {old} as a; assert a is new"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        tunelab.trian  # noqa: B018


def test_the_readme_module_map_matches_the_tree():
    readme = (PACKAGE.parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("| module or package | what it holds |")[1].split("\n\n")[0]
    rows = [line for line in table.splitlines() if line.strip().startswith("| `")]
    named = {name for row in rows for name in re.findall(r"`([a-z_]+(?:/|\.py))`", row.split("|")[1])}
    on_disk = {p.name for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    on_disk |= {f"{p.parent.name}/" for p in PACKAGE.glob("*/__init__.py")}
    assert named == on_disk
    for row in rows:
        first = re.findall(r"`([a-z_]+)/`", row.split("|")[1])
        for module in re.findall(r"`([a-z_0-9]+\.py)`", row.split("|")[2]) if first else []:
            assert (PACKAGE / first[0] / module).exists(), f"{first[0]}/{module}"


# The README's module map, bottom to top: a module imports only from its own layer and the ones below.
LAYERS = [("errors", "secrets", "tables"), ("machine",), ("config",), ("rundir",), ("models",), ("data",),
          ("training",), ("inference",), ("evaluation",), ("quantization",), ("export",), ("serving",),
          ("studies",), ("studio",), ("cli",)]
# The named exception, for a reason: tiny test models train their tokenizer on the built-in data.
UPWARD = {("tunelab.models.tiny", "tunelab.data.builtin")}


def layer(module: str) -> int:
    top = module.split(".")[1]
    return next(i for i, names in enumerate(LAYERS) if top in names)


def test_imports_point_down_the_module_map():
    upward = {(name, target) for name in MODULES if name.count(".") >= 1 and name != "tunelab.__main__"
              for target in imported_modules(name) if target.count(".") >= 1 and layer(target) > layer(name)}
    assert upward == UPWARD
