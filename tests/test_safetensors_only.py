"""No model or weight load in the project can unpickle: a scan of the source.

Every ``from_pretrained(`` of a model passes ``use_safetensors=True`` (tokenizers read JSON and
are exempt), and nothing calls ``torch.load``, imports ``pickle`` or lets NumPy unpickle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("src", "studies", "workflow")
BANNED = re.compile(
    r"\btorch\.load\(|^\s*(import|from)\s+(c?pickle|dill|joblib)\b|allow_pickle\s*=\s*True"
    r"|weights_only\s*=\s*False",
    re.MULTILINE,
)


def _files(*suffixes: str) -> list[Path]:
    return sorted(p for d in SCANNED for s in suffixes for p in (ROOT / d).rglob(f"*{s}"))


def _is_tokenizer(call: ast.Call) -> bool:
    receiver = ast.unparse(call.func.value)
    return "Tokenizer" in receiver or "tokenizer" in receiver


def _unsafe_loads(source: str) -> list[int]:
    """Line numbers of model ``from_pretrained`` calls without ``use_safetensors=True``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "from_pretrained"
        ):
            continue
        safe = any(
            k.arg == "use_safetensors" and isinstance(k.value, ast.Constant) and k.value.value
            for k in node.keywords
        )
        if not safe and not _is_tokenizer(node):
            lines.append(node.lineno)
    return lines


def test_every_model_load_asks_for_safetensors():
    python = _files(".py")
    assert len(python) > 50  # the scan did find the project
    unsafe = {str(p.relative_to(ROOT)): n for p in python if (n := _unsafe_loads(p.read_text()))}
    assert unsafe == {}, "from_pretrained without use_safetensors=True"
    for smk in [*_files(".smk"), ROOT / "Snakefile"]:
        assert "from_pretrained(" not in smk.read_text(), smk


def test_nothing_unpickles():
    found = {
        str(p.relative_to(ROOT)): m.group(0)
        for p in _files(".py", ".smk")
        if (m := BANNED.search(p.read_text()))
    }
    assert found == {}


def test_the_scan_catches_what_it_looks_for():
    src = "from transformers import AutoModelForCausalLM as M\nM.from_pretrained(\n    'x'\n)\n"
    assert _unsafe_loads(src) == [2]
    assert _unsafe_loads("M.from_pretrained('x', use_safetensors=True)") == []
    assert _unsafe_loads("AutoTokenizer.from_pretrained('x')") == []
    assert BANNED.search("w = torch.load(path)") and BANNED.search("import pickle")
    assert BANNED.search("np.load(p, allow_pickle=True)")
    assert not BANNED.search("np.load(p, allow_pickle=False)")
