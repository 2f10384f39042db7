"""Run a packaged notebook through papermill: the executed copy is the record of the run.

The kernel runs in a fresh empty folder, never in the study or output folder: Python puts a
kernel's working directory first on ``sys.path``, so a ``probes/`` or ``ratings/`` folder in
a study someone sent you would otherwise be imported instead of medprobe. Notebooks get
every path as an absolute parameter and do not depend on their working directory.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .errors import ProbeError

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


class KernelDiedError(ProbeError):
    """The notebook's kernel process ended mid-cell: killed by the OS (memory), or crashed."""

    def __init__(self, name: str, output: Path):
        self.name, self.output = name, output
        super().__init__(
            f"{name}: the Python kernel running it died (killed by the operating system, most often "
            "for lack of memory, or crashed) before the notebook finished. Try again with less "
            "memory needed (a smaller preset or fewer images per batch), on another --device, or "
            f"on a machine with more memory. The notebook as far as it got is {output}")


def _is_dead_kernel(exc: BaseException) -> bool:
    """nbclient's DeadKernelError, raised as is or reported by papermill as a cell's error."""
    from nbclient.exceptions import DeadKernelError

    return isinstance(exc, DeadKernelError) or getattr(exc, "ename", None) == "DeadKernelError"


def execute_notebook(name: str, output: str | Path, parameters: dict, progress: bool = True) -> Path:
    """Execute ``notebooks/<name>`` with ``parameters`` into ``output``.

    A failing cell raises :class:`ProbeError` that names the executed copy, where the
    traceback can be read in context; a kernel that died raises :class:`KernelDiedError`.
    The kernel always starts in an empty temporary folder (see the module docstring): a
    caller's folder (the study, --out) may hold packages that would shadow ours, so pass
    paths as absolute parameters.
    """
    import papermill as pm

    source = NOTEBOOK_DIR / name
    if not source.exists():
        raise ProbeError(f"{source}: notebook not found; is medprobe installed from its repository "
                         "(pip install -e .)?")
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="medprobe-kernel-") as empty:
        try:
            pm.execute_notebook(str(source), str(output), parameters=parameters, kernel_name="python3",
                                progress_bar=progress, cwd=empty)
        except pm.PapermillExecutionError as exc:
            if _is_dead_kernel(exc):
                raise KernelDiedError(name, output) from None
            raise ProbeError(f"{name} stopped in cell {exc.exec_count}: {exc.ename}: {exc.evalue}. "
                             f"The executed notebook with the full traceback is {output}") from None
        except Exception as exc:
            if _is_dead_kernel(exc):
                raise KernelDiedError(name, output) from None
            raise
    return output
