"""Every script under benchmarks/ and experiments/ parses and imports only what llmbio has."""

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SCRIPTS = sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("experiments/**/*.py")])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_script_imports_exist(script):
    tree = ast.parse(script.read_text(), filename=str(script))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llmbio"):
            module = importlib.import_module(node.module)
            # a name is an attribute or a submodule (`from llmbio import artefacts`), which is an
            # attribute only once something has imported it
            missing = [
                a.name
                for a in node.names
                if not hasattr(module, a.name)
                and importlib.util.find_spec(f"{node.module}.{a.name}") is None
            ]
            assert not missing, f"{script.name}: {node.module} has no {missing}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("llmbio"):
                    importlib.import_module(alias.name)


def test_scripts_do_not_edit_sys_path():
    for script in SCRIPTS:
        assert "sys.path" not in script.read_text(), f"{script}: import llmbio.lab instead"
