"""Run a packaged notebook through papermill: the executed copy is the record of the run."""

from __future__ import annotations

from pathlib import Path

from .errors import ProbeError

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def execute_notebook(name: str, output: str | Path, parameters: dict, cwd: str | Path | None = None,
                     progress: bool = True) -> Path:
    """Execute ``notebooks/<name>`` with ``parameters`` into ``output``.

    A failing cell raises :class:`ProbeError` that names the executed copy, where the
    traceback can be read in context.
    """
    import papermill as pm

    source = NOTEBOOK_DIR / name
    if not source.exists():
        raise ProbeError(f"{source}: notebook not found; is medprobe installed from its repository "
                         "(pip install -e .)?")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(str(source), str(output), parameters=parameters, kernel_name="python3",
                            progress_bar=progress, cwd=str(cwd) if cwd else None)
    except pm.PapermillExecutionError as exc:
        raise ProbeError(f"{name} stopped in cell {exc.exec_count}: {exc.ename}: {exc.evalue}. "
                         f"The executed notebook with the full traceback is {output}") from None
    return output
