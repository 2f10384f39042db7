"""Run a packaged notebook through papermill: the executed copy is the record of the run.

The kernel runs in a fresh empty folder, never in the study or output folder: Python puts a
kernel's working directory first on ``sys.path``, so a ``probes/`` or ``ratings/`` folder in
a study someone sent you would otherwise be imported instead of medprobe. Notebooks get
every path as an absolute parameter and do not depend on their working directory.

What the terminal shows. A notebook that declares a ``progress_file`` parameter (the probe
notebook does) reports its work through that file, a small side channel (see
:class:`ProgressFile`), and the terminal shows a bar of images made instead of papermill's
bar of notebook cells, which sat at 1 of 11 cells for the whole generation. The kernel talks
to this process over IPC (Unix sockets in a private temporary folder) rather than TCP on
localhost: no other user or program on the machine can listen in, and ipykernel has no
"running over TCP without encryption" warning to print. A kernel that finished its notebook
is shut down with a shutdown request alone, not interrupted first (jupyter_client's default),
so ipykernel does not log "KeyboardInterrupt caught in kernel" at the end of a run; a kernel
stopped mid-cell (Ctrl-C) is still interrupted first, and one that does not stop is
terminated, then killed. The kernel's own log (its process's stderr) is written to a file in
the private folder instead of the terminal: a cell's output is in the executed notebook.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path

from .errors import KernelDiedError, ProbeError

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def _is_dead_kernel(exc: BaseException) -> bool:
    """nbclient's DeadKernelError, raised as is or reported by papermill as a cell's error."""
    from nbclient.exceptions import DeadKernelError

    return isinstance(exc, DeadKernelError) or getattr(exc, "ename", None) == "DeadKernelError"


class ProgressFile:
    """A tqdm bar that also writes its state to a small JSON file, for another process to show.

    The kernel running a notebook writes ``{"n", "total", "postfix", "closed"}`` after every
    change (a new file moved into place, so a reader never sees half of one), and
    :func:`execute_notebook` draws the bar in the terminal from it (see :class:`_SideBar`).
    """

    def __init__(self, bar, path: str | Path):
        self.bar, self.path = bar, Path(path)
        self.n, self.total, self.postfix, self.closed = 0, bar.total, "", False
        self._write()

    def update(self, n: int = 1) -> None:
        self.n += n
        self.bar.update(n)
        self._write()

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text
        self.bar.set_postfix_str(text)
        self._write()

    def close(self) -> None:
        self.closed = True
        self.bar.close()
        self._write()

    def _write(self) -> None:
        state = {"n": self.n, "total": self.total, "postfix": self.postfix, "closed": self.closed}
        partial = self.path.with_name(self.path.name + ".part")
        try:
            partial.write_text(json.dumps(state), encoding="utf-8")
            os.replace(partial, self.path)
        except OSError:
            pass  # a progress bar is never worth failing a run for


def read_progress(path: str | Path) -> dict | None:
    """The last state a :class:`ProgressFile` wrote, or None before its first write."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class _SideBar:
    """The terminal's bar of images, redrawn from a :class:`ProgressFile` four times a second."""

    def __init__(self, path: Path, unit: str = "img", desc: str = "images"):
        from tqdm.auto import tqdm

        self.path, self.started, self.stopping = path, False, threading.Event()
        self.postfix = "starting the Python kernel"
        self.bar = tqdm(total=None, unit=unit, desc=desc, postfix=self.postfix)
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        while not self.stopping.wait(0.25):
            self._show()

    def _show(self) -> None:
        state = read_progress(self.path)
        if state is None:
            return
        if not self.started or state.get("total") != self.bar.total:
            self.started = True
            self.bar.reset(total=state.get("total"))  # the rate and time left count from the first image
        if state.get("n", 0) != self.bar.n:
            self.bar.update(state["n"] - self.bar.n)
        postfix = ("finishing the notebook" if state.get("closed") else state.get("postfix", ""))[:60]
        if postfix != self.postfix:  # a redraw only on a change: a log file gets a line per change
            self.postfix = postfix
            self.bar.set_postfix_str(postfix)

    def close(self, finished: bool = True) -> None:
        self.stopping.set()
        self.thread.join()
        self._show()
        if not finished:  # a failed cell, a dead kernel, Ctrl-C: the caller says what happened
            self.bar.set_postfix_str("stopped")
        self.bar.close()


class _QuietTeardown(logging.Filter):
    """Drops asyncio's log of a DeadKernelError left in a task nobody awaits any more.

    On Ctrl-C the event loop stops under nbclient's cell task; the kernel's shutdown runs the
    loop again, the cancelled reply makes that task raise DeadKernelError, and asyncio logs it
    with a traceback ("Task exception was never retrieved"), possibly only when the task is
    garbage-collected, while the command has already said "interrupted". A kernel that dies
    during a run is reported by execute_notebook itself (KernelDiedError); any other record passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (error is not None and _is_dead_kernel(error))


_QUIET = _QuietTeardown()


def quiet_dead_kernel_logs() -> None:
    """Keep asyncio from printing the traceback of a dead kernel's abandoned task (see
    :class:`_QuietTeardown`); installed once, for the rest of the process."""
    logging.getLogger("asyncio").addFilter(_QUIET)  # addFilter ignores a filter already there


def _kernel_manager_class(folder: str, busy=lambda: False):
    """A kernel manager that talks IPC in ``folder`` and shuts an idle kernel down without an interrupt.

    ``busy()`` says whether a cell is running (see :func:`execute_notebook`): a kernel stopped
    mid-cell (Ctrl-C in the terminal) is still interrupted first, so the cell's own clean-up runs
    (a probe run marks itself interrupted and releases its panels).
    """
    from jupyter_client import AsyncKernelManager

    # a Unix socket path has at most ~100 bytes; Windows has no IPC transport: TCP there
    ipc = os.name != "nt" and len(os.path.join(folder, "kernel-ipc-99999")) < 100

    class MedprobeKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            if ipc:
                kwargs.setdefault("transport", "ipc")
                kwargs.setdefault("connection_file", os.path.join(folder, "kernel.json"))
            super().__init__(**kwargs)

        async def _async_launch_kernel(self, kernel_cmd, **kw) -> None:
            # the kernel's own stderr (ipykernel's log: "KeyboardInterrupt caught", a ZMQ socket
            # closed under a reply while a stopped run shuts it down) goes to a log in the private
            # folder, not to the terminal: what a cell prints reaches the executed notebook anyway
            if "stderr" not in kw:
                kw["stderr"] = open(os.path.join(folder, "kernel-stderr.log"), "ab")  # noqa: SIM115
            try:
                await super()._async_launch_kernel(kernel_cmd, **kw)
            finally:
                kw["stderr"].close()  # the kernel holds its own copy of the descriptor

        async def _async_interrupt_kernel(self) -> None:
            # jupyter_client interrupts before every shutdown; after the notebook is done (or a cell
            # failed) the kernel is idle, and the interrupt would only make ipykernel log an
            # alarming "KeyboardInterrupt caught in kernel". A kernel that ignores the shutdown
            # request is still terminated, then killed, by the manager.
            if self.shutting_down and not busy():
                return
            await super()._async_interrupt_kernel()

    return MedprobeKernelManager


def _declares(source: Path, parameter: str) -> bool:
    """Whether the notebook's parameters cell sets ``parameter``."""
    try:
        cells = json.loads(source.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return False
    return any("parameters" in c.get("metadata", {}).get("tags", []) and
               any(line.split("=")[0].strip() == parameter for line in
                   "".join(c.get("source", "")).splitlines())
               for c in cells)


def execute_notebook(name: str, output: str | Path, parameters: dict, progress: bool = True) -> Path:
    """Execute ``notebooks/<name>`` with ``parameters`` into ``output``.

    ``progress`` shows a bar on stderr: of what the notebook reports through its
    ``progress_file`` parameter when it declares one (images, for the probe notebook), else
    of notebook cells.

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
    side = progress and "progress_file" not in parameters and _declares(source, "progress_file")
    with tempfile.TemporaryDirectory(prefix="medprobe-kernel-") as empty, \
            tempfile.TemporaryDirectory(prefix="medprobe-k-", dir=_short_tmp()) as private:
        bar, running, finished = None, [], False  # running: the cell the kernel is executing now
        if side:
            parameters = {**parameters, "progress_file": os.path.join(private, "progress.json")}
            bar = _SideBar(Path(parameters["progress_file"]))
        quiet_dead_kernel_logs()  # for good: the record may come when the task is collected, at exit
        try:
            pm.execute_notebook(str(source), str(output), parameters=parameters, kernel_name="python3",
                                progress_bar=progress and not side, cwd=empty,
                                kernel_manager_class=_kernel_manager_class(private, lambda: bool(running)),
                                on_cell_execute=lambda **_: running.append(True),
                                on_cell_executed=lambda **_: running.clear())
            finished = True
        except pm.PapermillExecutionError as exc:
            if _is_dead_kernel(exc):
                raise KernelDiedError(name, output) from None
            raise ProbeError(f"{name} stopped in cell {exc.exec_count}: {exc.ename}: {exc.evalue}. "
                             f"The executed notebook with the full traceback is {output}") from None
        except Exception as exc:
            if _is_dead_kernel(exc):
                raise KernelDiedError(name, output) from None
            raise
        finally:
            if bar is not None:
                bar.close(finished)
    return output


def _short_tmp() -> str | None:
    """The temporary folder, or /tmp when its path is too long for the kernel's Unix sockets."""
    default = tempfile.gettempdir()
    return "/tmp" if len(default) > 60 and os.path.isdir("/tmp") else None
