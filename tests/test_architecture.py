"""The dependency rule, checked: what each part of fmadask may import.

- The stage packages (``fmadask.ml``, ``fmadask.dl``, ``fmadask.pipeline``) import none of each
  other, nor what sits above them (``fmadask.fusion``, ``fmadask.predict``, ``fmadask.run``,
  ``fmadask.cli``); they meet only in the run folder (:mod:`fmadask.runfolder`).
- Nothing in fmadask imports ``fmadask.cli``.
- The light modules (features, audio, FMA metadata, the run-folder format, storage, options,
  locks, checksums, the shard cache, the CNN's options) import neither Dask nor torch, not even inside a function,
  so a reader of a run folder or ``fmadask --help`` never pays for them.

The static checks read every module's syntax tree: ``import`` and ``from`` statements anywhere
(also inside functions), the string given to ``importlib.import_module``, and any string that is
a whole module reference (``'fmadask.dl.predict'`` or ``'fmadask.dl.predict:predict_cnn'``, the
form of a lazy registry). The subprocess checks import a module in a fresh interpreter and look
at ``sys.modules``, which also catches what a third-party import drags in.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fmadask

ROOT = Path(fmadask.__file__).parent
#: Packages that are stages: none may import another.
STAGES = ("fmadask.ml", "fmadask.dl", "fmadask.pipeline")
#: Modules above the stages (they combine them); no stage imports them.
ABOVE = ("fmadask.fusion", "fmadask.predict", "fmadask.run", "fmadask.cli")
#: Third-party packages that make an import heavy.
HEAVY = ("dask", "distributed", "torch")
#: Modules that import neither Dask nor torch.
LIGHT = ("fmadask.features", "fmadask.audio", "fmadask.fma", "fmadask.runfolder",
         "fmadask.runlabels", "fmadask.storage", "fmadask.options", "fmadask.optionkit", "fmadask.flags", "fmadask.lock",
         "fmadask.integrity", "fmadask.shardcache", "fmadask.logs", "fmadask.dl.config")
#: What a light module may not reference, even inside a function: Dask, torch, and the fmadask
#: modules built on them.
NOT_IN_LIGHT = (*HEAVY, "dask_ml", "fmadask.cluster", "fmadask.torchmel", *STAGES, *ABOVE)
#: A string that is a whole module reference, optionally ``module:attribute``.
MODULE_STRING = re.compile(r"fmadask(\.\w+)+(:\w+)?")


def module_name(path: Path) -> str:
    """``fmadask.ml.predict`` for ``ROOT/ml/predict.py``; a package for its ``__init__.py``."""
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_files(name: str) -> list[Path]:
    """The source files of module or package ``name``."""
    path = ROOT.parent.joinpath(*name.split("."))
    if path.is_dir():
        return sorted(path.rglob("*.py"))
    return [path.with_suffix(".py")]


def is_module(name: str) -> bool:
    """True when ``name`` is a module or package of fmadask (not a name defined in one)."""
    path = ROOT.parent.joinpath(*name.split("."))
    return within(name, "fmadask") and (path.is_dir() or path.with_suffix(".py").is_file())


def references(path: Path, name: str | None = None) -> set[str]:
    """The modules a source file imports or names as an import (see the module docstring).

    ``name`` is the file's module name (default: from its place under fmadask/); relative
    imports are resolved against it.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:             # relative: resolve against this module's package
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            # ``from fmadask import pipeline`` imports the module fmadask.pipeline.
            found |= {f"{base}.{alias.name}" for alias in node.names
                      if is_module(f"{base}.{alias.name}")}
        elif isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                MODULE_STRING.fullmatch(node.value):
            found.add(node.value.partition(":")[0])
    return found


def _is_import_module(func: ast.expr) -> bool:
    """``importlib.import_module``, a bare ``import_module`` or ``__import__``."""
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id in ("import_module", "__import__")


def within(name: str, package: str) -> bool:
    """True when module ``name`` is ``package`` or inside it."""
    return name == package or name.startswith(package + ".")


def stage_of(name: str) -> str | None:
    return next((s for s in STAGES if within(name, s)), None)


def test_references_sees_every_form_of_import(tmp_path: Path) -> None:
    # The walker itself: a rule checked with a blind walker would pass whatever the code does.
    path = tmp_path / "probe.py"
    path.write_text("import torch.nn\n"
            "from fmadask import pipeline\n"
            "def f():\n"
            "    import importlib\n"
            "    from fmadask.dl.nets import build_net\n"
            "    importlib.import_module('fmadask.fusion.stage')\n"
            "    return {'cnn': 'fmadask.dl.predict:predict_cnn'}\n"
            "from . import models\n"
            "from .data import load_dataset\n"
            "from fmadask import cli\n")
    found = references(path, "fmadask.ml.probe")
    assert {"torch.nn", "fmadask.pipeline", "fmadask.dl.nets", "fmadask.fusion.stage",
            "fmadask.dl.predict", "fmadask.ml.models", "fmadask.ml.data", "fmadask.cli"} <= found
    assert "fmadask.dl.nets.build_net" not in found      # a name, not a module


def test_no_stage_imports_another_or_what_sits_above() -> None:
    bad = []
    for stage in STAGES:
        for path in module_files(stage):
            for ref in sorted(references(path)):
                other = stage_of(ref)
                if (other is not None and other != stage) or any(within(ref, a) for a in ABOVE):
                    bad.append(f"{module_name(path)} -> {ref}")
    assert not bad, "stage packages import each other or above them:\n" + "\n".join(bad)


def test_nothing_imports_the_cli() -> None:
    bad = [f"{module_name(path)} -> {ref}" for path in sorted(ROOT.rglob("*.py"))
           if module_name(path) != "fmadask.cli"
           for ref in sorted(references(path)) if within(ref, "fmadask.cli")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", LIGHT)
def test_light_modules_never_reference_dask_or_torch(name: str) -> None:
    bad = [f"{module_name(path)} -> {ref}" for path in module_files(name)
           for ref in sorted(references(path))
           if any(within(ref, heavy) for heavy in NOT_IN_LIGHT) and not within(ref, name)]
    assert not bad, "\n".join(bad)


def heavy_after(code: str, packages: tuple[str, ...] = HEAVY) -> list[str]:
    """The ``packages`` (default the heavy ones) in ``sys.modules`` after running ``code`` in a
    fresh interpreter."""
    probe = (f"{code}\nimport json, sys\n"
             f"print(json.dumps([n for n in {packages!r} if n in sys.modules]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT.parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", LIGHT)
def test_light_modules_import_neither_dask_nor_torch(name: str) -> None:
    assert heavy_after(f"import {name}") == []


def test_reading_a_run_folder_for_the_classical_stage_stays_light() -> None:
    # The classical stage's data reader and the model card need neither torch nor distributed.
    loaded = heavy_after("import fmadask.ml.data, fmadask.ml.persist")
    assert "torch" not in loaded and "distributed" not in loaded


def test_reading_features_or_planning_featurize_does_not_import_librosa() -> None:
    # train, fuse and every completeness check read features tables: librosa's import (seconds,
    # tens of seconds on a busy machine) is for computing them only.
    # Nor does planning a featurize job (its record holds the mel recipe) on the client.
    assert heavy_after("from fmadask.runfolder import features_schema\nfeatures_schema()\n"
                       "import fmadask.ml.data\n"
                       "from fmadask.pipeline.featurize import FeaturizeConfig\n"
                       "FeaturizeConfig().job", ("librosa",)) == []


def test_checking_a_job_spec_names_architectures_without_torch() -> None:
    loaded = heavy_after(
        "from fmadask.jobspec import build_spec\n"
        "from fmadask.run import check_names\n"
        "check_names(build_spec({'data': {'dir': 'd'}, 'output': {'dir': 'o'},\n"
        "                        'classical': {'enabled': False},\n"
        "                        'featurize': {'what': ['spectrograms']},\n"
        "                        'cnn': {'enabled': True, 'archs': ['naive']}}, 'test'))")
    assert "torch" not in loaded


def test_reading_the_stage_registry_stays_light() -> None:
    # fmadask run --check and fmadask predict read every stage's value: neither Dask nor torch.
    loaded = heavy_after(
        "from fmadask.jobspec import build_spec\n"
        "from fmadask.stages import stage_params, stages\n"
        "spec = build_spec({'data': {'dir': 'd'}, 'output': {'dir': 'o'}}, 'test')\n"
        "[stage_params(spec, s.name) for s in stages()]")
    assert loaded == []


def test_the_command_line_reads_the_registry_without_pandas_dask_or_torch() -> None:
    # fmadask --help builds every command's parser; ``fmadask run`` names the registry's stages.
    loaded = heavy_after(
        "import contextlib, io\n"
        "from fmadask.cli import build_parser\n"
        "parser = build_parser()\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    parser.parse_args(['run', '--help'])\n",
        packages=("pandas", "pyarrow", *HEAVY))
    assert loaded == []
    from fmadask.cli import build_parser
    from fmadask.stages import stages

    names = ", ".join(s.name for s in stages())
    assert f"({names})" in " ".join(build_parser()._subparsers._group_actions[0]
                                    .choices["run"].format_help().split())


def test_each_stage_package_exports_its_stage_from_a_light_entry() -> None:
    from fmadask.stages import REGISTRY

    packages = [reference.partition(":")[0].rpartition(".")[0] for reference in REGISTRY]
    assert set(packages) == {*STAGES, "fmadask.fusion"}
    bad = [f"{module_name(path)} -> {ref}" for package in packages
           for path in module_files(f"{package}.entry")
           for ref in sorted(_top_level_imports(path))
           if any(within(ref, heavy) for heavy in NOT_IN_LIGHT) and not within(ref, package)]
    assert not bad, "an entry module imports heavy modules when imported:\n" + "\n".join(bad)


def _top_level_imports(path: Path) -> set[str]:
    """Modules a file imports when it is imported (statements outside functions)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_no_import_circle_between_modules() -> None:
    # Every import counts, those inside functions too: a lazy import that closes a circle
    # (options -> fma.layout -> storage -> options) only hides it. A module's own packages are
    # imported before it whatever it says (not an edge), and the registry's strings name the
    # stages' entries for reading, not for importing fmadask.stages' dependencies.
    from fmadask.stages import REGISTRY

    entries = {reference.partition(":")[0] for reference in REGISTRY}
    graph = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        graph[name] = {ref for ref in references(path) if is_module(ref) and ref != "fmadask"
                       and not within(name, ref)
                       and not (name == "fmadask.stages" and ref in entries)}
    circles: set[str] = set()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        for ref in sorted(graph.get(name, ())):
            if ref in path:
                circles.add(" -> ".join(path[path.index(ref):] + [ref]))
            elif ref not in done:
                visit(ref, path + [ref])
        done.add(name)

    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert not circles, "import circles:\n" + "\n".join(sorted(circles))


#: Most parameters a function of fmadask takes (``self`` aside; ``*args`` and ``**kwargs`` count
#: one each), and most lines a module holds.
MAX_PARAMETERS = 10
MAX_LINES = 700
#: Today's exceptions (issue 21), each at most as big as it is now: they may only shrink, and go
#: from this list when they are within the limits.
OVER_LIMITS: dict[str, int] = {}


def _sizes() -> dict[str, int]:
    """Lines of every module, and parameters of every function (``module:function``)."""
    sizes = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        text = path.read_text(encoding="utf-8")
        sizes[name] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
                count = len(names) - (names[:1] in (["self"], ["cls"])) + bool(a.vararg) \
                    + bool(a.kwarg)
                key = f"{name}:{node.name}"
                sizes[key] = max(count, sizes.get(key, 0))
    return sizes


def test_no_function_takes_too_many_parameters_and_no_module_is_too_long() -> None:
    sizes = _sizes()
    limit = {key: MAX_PARAMETERS if ":" in key else MAX_LINES for key in sizes}
    over = [f"{key}: {size} (limit {OVER_LIMITS.get(key, limit[key])})"
            for key, size in sizes.items() if size > OVER_LIMITS.get(key, limit[key])]
    assert not over, "over the limits:\n" + "\n".join(over)
    # An exception that is gone or within the limits leaves the list.
    stale = [key for key in OVER_LIMITS if sizes.get(key, 0) <= limit.get(key, 0)]
    assert not stale, f"within the limits now, remove from OVER_LIMITS: {stale}"
