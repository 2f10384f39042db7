"""The statistics of a rating study: tidy tables and score tables in, tables and figures out.

This package reads the tidy rating table (one row per rater and showing, as
:func:`ratings.io.tidy_table` exports it, or a CSV/parquet export of it) and the study's score
table (:mod:`probes.scores`); it never opens the rating app. It imports only
:mod:`ratings.errors`, :mod:`ratings.scale`, its own modules and ``probes.{catalog, tables,
scores, store}``; the rating side (:mod:`ratings.io`, ``python -m ratings analyze``) reads a
study and hands the table in.

Modules, each with one job:

* :mod:`~ratings.analysis.stats`: the rank tests (Friedman, Wilcoxon on topic values),
  descriptives, shares with clustered intervals, multiplicity; one public function per test.
* :mod:`~ratings.analysis.ordinal`: the primary analysis, a cumulative-logit model clustered by
  topic, its estimability checks, permutation p-values and the nonsensical flag model.
* :mod:`~ratings.analysis.agreement`: agreement between and within raters (kappa, alpha).
* :mod:`~ratings.analysis.compare`: side-by-side comparisons: prompt-level sign tests in one family,
  Bradley-Terry (Davidson ties) strengths clustered by prompt, position bias, agreement on choices.
* :mod:`~ratings.analysis.metrics`: automated metrics (CLIP and the like) against the experts.
* :mod:`~ratings.analysis.plots`: one matplotlib figure per function, and :func:`~ratings.analysis.plots.save`.
* :mod:`~ratings.analysis.simulate`: synthetic tidy tables with a known truth, and power by
  simulation (simulated raters who answer inside a study are :mod:`ratings.simulated_raters`).
* :mod:`~ratings.analysis.protocol`: the declared analysis that runs them all
  (:func:`analyze`, :func:`sensitivity`, the methods paragraph).
* :mod:`~ratings.analysis.report`: the report's tables (CSV, LaTeX), figures and HTML page.
* :mod:`~ratings.analysis.reproduce`: the published study's analysis, exactly (``--reproduce``).

The protocol's entry points are importable from here, as they were from the former module
``ratings.analysis``: ``from ratings.analysis import analyze``.
"""

from .protocol import analyze, methods_text, notices, ordinal_contrasts, sensitivity

__all__ = ["analyze", "methods_text", "notices", "ordinal_contrasts", "sensitivity"]
