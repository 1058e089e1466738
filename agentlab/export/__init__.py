"""Export a notebook's agent as an installable package with an HTTP app.

>>> export_notebook("notebooks/01_build_an_agent.ipynb", name="support_agent")
PosixPath('exports/support_agent')
"""

from agentlab.export.cells import ExportCell, ExportError, NotebookCells, read_export_cells
from agentlab.export.exporter import export_notebook, find_factory
from agentlab.export.validation import EVAL_MIME, GateResult, Validator, run_eval_notebook

__all__ = [
    "EVAL_MIME",
    "ExportCell",
    "ExportError",
    "GateResult",
    "NotebookCells",
    "Validator",
    "export_notebook",
    "find_factory",
    "read_export_cells",
    "run_eval_notebook",
]
