"""The package's shape: layers that import only downwards, and no import cycles between modules.

The layers are written down once, as import-linter contracts in pyproject.toml; this runs them.
"""

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent


def test_layers_import_only_downwards():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_no_module_imports_one_that_imports_it_back():
    # grimp reads every import statement, those inside functions too: a cycle hidden by a lazy
    # import counts like any other. A package's __init__ gathering its modules' names is not a cycle.
    graph = grimp.build_graph("alexnet")
    cycles = []
    for importer in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(importer):
            if importer.startswith(imported + ".") or imported.startswith(importer + "."):
                continue
            chain = graph.find_shortest_chain(importer=imported, imported=importer)
            if chain:
                cycles.append(" -> ".join((importer, *chain)))
    assert not cycles, "\n".join(cycles)


def test_the_command_line_parser_imports_no_pipeline():
    # `alexnet --help` and a mistyped flag answer in the time torch takes to import: the parser
    # lists choices from light modules, never the data pipeline, the training loop or the explainers
    # (torchvision's import alone loads torch._dynamo, about 2 s of CPU).
    heavy = ("torchvision", "torch._dynamo", "matplotlib", "captum", "alexnet.training.loop", "alexnet.data.loaders",
             "alexnet.explain.attribution", "alexnet.inference")
    script = ("import sys\nfrom alexnet.cli import build_parser\nbuild_parser()\n"
              f"print(','.join(name for name in {heavy!r} if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""
