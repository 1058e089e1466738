import subprocess
import sys

import pytest

import agentlab


def test_every_public_name_resolves():
    for name in agentlab.__all__:
        assert getattr(agentlab, name) is not None
    assert sorted(agentlab.__all__) == sorted(agentlab._EXPORTS)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        agentlab.Nope  # noqa: B018


def test_import_is_lazy_about_heavy_dependencies():
    code = (
        "import sys, agentlab; from agentlab import ReActAgent, tool, FunctionModel; "
        "heavy = [m for m in ('duckdb', 'openai', 'xllamacpp', 'pandas', 'fastapi') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
