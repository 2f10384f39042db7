"""The analysis' docstring examples run, and every statistics function has one.

Each module of :mod:`ratings.analysis` is run through :mod:`doctest` (with ELLIPSIS and
NORMALIZE_WHITESPACE, so a table's column padding does not matter); the public functions of
the statistics modules (their ``__all__``) must each show an ``Examples`` section, as the
functions of scikit-posthocs and pingouin do.
"""

import doctest
import importlib
import inspect
import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

MODULES = ["agreement", "checks", "compare", "effects", "flow", "metrics", "mixed", "ordinal", "plots", "protocol", "report",
           "reproduce", "simulate", "stats"]
WITH_EXAMPLES = ["agreement", "checks", "compare", "effects", "flow", "mixed", "ordinal", "reproduce", "simulate", "stats"]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def run_examples(module) -> doctest.TestResults:
    """Run every docstring example of ``module``; the failures are printed (pytest shows them)."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in finder.find(module, module.__name__, globs=vars(module).copy()):
        runner.run(test)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("name", MODULES)
def test_every_docstring_example_runs(name):
    module = importlib.import_module(f"ratings.analysis.{name}")
    result = run_examples(module)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {module.__name__} fail (above)"


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_every_public_statistics_function_shows_an_example(name):
    module = importlib.import_module(f"ratings.analysis.{name}")
    functions = [n for n in module.__all__ if inspect.isfunction(getattr(module, n))]
    assert functions, f"{module.__name__}.__all__ names no function"
    lacking = [n for n in functions if "Examples" not in (inspect.getdoc(getattr(module, n)) or "")]
    assert lacking == [], f"{module.__name__}: no Examples section in the docstring of {', '.join(lacking)}"


def test_a_wrong_example_fails():
    """The check can fail: an example whose output is wrong is counted as a failure."""
    import types

    module = types.ModuleType("broken")
    exec('def f():\n    """\n    >>> 1 + 1\n    3\n    """\n', vars(module))
    module.f.__module__ = "broken"
    result = run_examples(module)
    assert (result.failed, result.attempted) == (1, 1)
