"""The analysis report: tables (CSV and LaTeX) and figures from a tidy rating table.

``notebooks/30_analyze.ipynb`` calls :func:`load_ratings` and :func:`write_report`;
``python -m ratings analyze`` executes that notebook with papermill and turns the executed
copy into ``report.html``. Simulated ratings are labelled as such in every output.

Preset, style and topic names come from whoever made the study, and the report is an HTML
page someone opens in a browser: every label reaches it as escaped text (pandas escapes
tables; the sentences below escape theirs), and :func:`notebook_to_html` sanitises the page
as a second line of defence.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import pandas as pd

from .errors import AnalysisError

TABLES = ("ordinal", "radiology", "flags", "descriptives", "at_least", "omnibus", "pairwise", "presets", "detail",
          "agreement", "sensitivity")
# analyze(...)["metrics"] (only where automated scores exist) -> report file names
METRIC_TABLES = {"overall": "metric_vs_experts", "by_group": "metric_vs_experts_by_group",
                 "rankings": "metric_rankings"}


def load_ratings(study: str | Path | None = None, table: str | Path | None = None) -> pd.DataFrame:
    """The tidy table of a study folder, or of an exported CSV/parquet file.

    An exported CSV's texts are read as the study holds them: the ``'`` that the export puts
    before a text starting with = + - @, a tab or a carriage return is taken off again.
    """
    if (study is None) == (table is None):
        raise AnalysisError("give either a study folder or an exported table, not both or neither")
    if study is not None:
        from .io import tidy_table

        tidy = tidy_table(study, include_repeats=True)
    else:
        path = Path(table)
        if not path.exists():
            raise AnalysisError(f"{path}: file not found; export one with `python -m ratings export`")
        if path.suffix == ".parquet":
            tidy = pd.read_parquet(path)
        else:
            from .io import undo_spreadsheet_safe_table

            # the CSV export writes a text such as "=1+1" as "'=1+1" (spreadsheet-safe); take the ' off again
            tidy = undo_spreadsheet_safe_table(pd.read_csv(path))
        for column in [c for c in tidy.columns if c.endswith("_score")]:
            tidy[column] = tidy[column].astype("Int64")
        if "nonsensical" in tidy:
            tidy["nonsensical"] = tidy["nonsensical"].astype(str).str.lower().isin(["true", "1"])
        if "repeat" not in tidy:
            tidy["repeat"] = 0
    if tidy.empty:
        raise AnalysisError("there are no ratings to analyse yet")
    from .plots import order_styles

    # catalog order, not the shuffled order raters saw panels in; stats and plots follow it
    tidy["style"] = pd.Categorical(tidy["style"], categories=order_styles(tidy["style"].astype(str)))
    tidy.attrs["simulated"] = is_simulated(tidy)
    return tidy


def is_simulated(tidy: pd.DataFrame) -> bool:
    return bool(tidy.attrs.get("simulated")) or bool(len(tidy)) and tidy["rater"].astype(str).str.startswith("sim-").all()


def _group_scores(study) -> pd.DataFrame | None:
    """The study's distances to real images (``probes score --metrics fid,kid``), or None."""
    if study is None:
        return None
    try:
        from probes.scores import group_scores

        table = group_scores(study)
    except Exception:  # a study without a scores table, or not a study: no distances
        return None
    return table if len(table) else None


def write_report(tidy: pd.DataFrame, out: str | Path, aggregate: str = "median", nonsensical: str = "panel-zero",
                 correction: str = "holm", alpha: float = 0.05, n_boot: int = 2000, seed: int = 0,
                 n_perm: int = 0, panel_scores: pd.DataFrame | None = None, study: str | Path | None = None) -> dict:
    """Run the analysis and write every table (CSV + LaTeX), ``methods.md`` and every figure
    (SVG + PNG) into ``out``.

    Where automated scores exist (``panel_scores``, or the ``scores`` table of ``study``), also
    ``metric_vs_experts.csv``, ``metric_vs_experts_by_group.csv``, ``metric_rankings.csv`` and
    the figure ``metrics-vs-experts``; ``tables["metrics"]`` then holds those tables (by the
    keys of :data:`METRIC_TABLES`, and ``panels``). A ``study`` with FID/KID scores also gets
    ``distances.csv`` (per preset and style, against the real reference images).

    Returns ``{"tables": {name: DataFrame}, "figures": {name: Figure paths}, "methods": str}``.
    """
    from . import analysis, plots, stats

    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    results = analysis.analyze(tidy, aggregate=aggregate, nonsensical=nonsensical, correction=correction,
                            alpha=alpha, n_boot=n_boot, seed=seed, n_perm=n_perm, panel_scores=panel_scores,
                            study=study)
    methods = results.pop("methods")
    note = "SIMULATED RATINGS, not from clinicians" if is_simulated(tidy) else ""
    (out / "methods.md").write_text((f"> {note}\n\n" if note else "") + methods, encoding="utf-8")
    metrics = results.get("metrics")
    written = {**results, **{file: metrics[key] for key, file in METRIC_TABLES.items()}} if metrics else results
    distances = _group_scores(study)
    if distances is not None:  # FID / KID per preset and style against real images: no panel to correlate
        written = {**written, "distances": distances}
    for name, frame in written.items():
        if frame is None or not isinstance(frame, pd.DataFrame):
            continue
        frame.attrs["simulated"] = bool(note)
        frame.to_csv(out / f"{name}.csv", index=False)
        # escape: a label such as "glide_cfg" or "\\input{...}" is text in the paper, not LaTeX
        latex = frame.to_latex(index=False, float_format="%.3g", na_rep="", escape=True,
                               caption=f"{name}{' (' + note + ')' if note else ''}", label=f"tab:{name}")
        (out / "tables" / f"{name}.tex").write_text(latex, encoding="utf-8")

    figures = {}

    def save(name, figure):
        figures[name] = plots.save(figure, out / "figures", name)

    ordinal = results["ordinal"]
    contrasts = ordinal[ordinal["kind"] == "contrast"] if "kind" in ordinal else ordinal.iloc[:0]
    for dimension in stats._dimensions(tidy):
        prepared = stats.prepare(tidy, dimension, aggregate=aggregate, nonsensical=nonsensical)
        prepared.attrs["simulated"] = bool(note)
        if (contrasts["dimension"] == dimension).any():
            save(f"odds-ratios-{dimension}", plots.ordinal_forest(contrasts, dimension, alpha))
            save(f"pvalues-ordinal-{dimension}", plots.pvalue_heatmap(contrasts, dimension, alpha))
        save(f"shares-{dimension}", plots.share_at_least(results["at_least"], dimension,
                                                          unit="rating" if aggregate == "none" else "panel"))
        save(f"scores-{dimension}", plots.score_boxstrip(prepared, dimension))
        save(f"pvalues-{dimension}", plots.pvalue_heatmap(results["pairwise"], dimension, alpha))
        save(f"medians-{dimension}", plots.medians_iqr(results["descriptives"], dimension))
        save(f"distribution-{dimension}", plots.distribution_bars(tidy, dimension))
        per_rater = stats.prepare(tidy, dimension, aggregate="none", nonsensical=nonsensical)
        per_rater.attrs["simulated"] = bool(note)
        presets = list(dict.fromkeys(per_rater["preset"]))
        if {"glide-clip", "glide-cfg"} <= set(presets) or len(presets) == 2:
            a, b = ("glide-clip", "glide-cfg") if "glide-clip" in presets else presets[:2]
            save(f"guidance-{dimension}", plots.paired_slopes(per_rater, "preset", a, b, ["prompt_id", "rater"],
                                                              dimension=dimension))
        if {"short", "detailed"} <= set(per_rater["detail"]):
            save(f"detail-{dimension}", plots.paired_slopes(per_rater, "detail", "short", "detailed",
                                                            ["style", "topic", "preset", "rater"], dimension=dimension))
    if results.get("agreement") is not None and len(results["agreement"]):
        save("agreement", plots.agreement_heatmap(results["agreement"]))
    if metrics and len(metrics["panels"]):
        save("metrics-vs-experts", plots.metric_vs_experts(metrics["panels"], metrics["overall"]))
    return {"tables": results, "figures": figures, "methods": methods}


def summary_html(tidy: pd.DataFrame, aggregate: str, nonsensical: str, correction: str, alpha: float) -> str:
    """The report's opening sentence: panels, raters, ratings, presets and the analysis path."""
    first = tidy[tidy["repeat"] == 0]
    presets = ", ".join(escape(str(p)) for p in sorted(first["preset"].astype(str).unique()))
    path = ", ".join(f"{name} = <code>{escape(str(value))}</code>" for name, value in
                     (("aggregate", aggregate), ("nonsensical", nonsensical), ("correction", correction)))
    return (f"<p><b>{first['panel'].nunique()} panels</b>, <b>{first['rater'].nunique()} raters</b>, "
            f"{first['topic'].nunique()} topics (the clusters), {len(first)} ratings; presets: {presets}. "
            f"Analysis path: {path}, alpha = {escape(str(alpha))}.</p>")


def radiology_html(radiology: pd.DataFrame, alpha: float) -> str:
    """Per dimension and analysis: does "radiology is lower than every other style" hold?"""
    if radiology is None or radiology.empty or "claim" not in radiology:
        return "<p>No radiology claim to test: the study has no radiology styles and other styles.</p>"
    lines = []
    for (dimension, analysis), rows in radiology.groupby(["dimension", "analysis"], sort=False):
        pairs, claim = rows[rows["claim"] == "pair"], rows[rows["claim"] == "conjunction"].iloc[0]
        lower = int(((pairs["p"] < alpha) & (pairs["effect"] < 0)).sum())
        adjusted = int(((pairs["p_adj"] < alpha) & (pairs["effect"] < 0)).sum())
        verdict = "<b>holds</b>" if claim["holds"] else "<b>does not hold</b>"
        lines.append(
            f"<p><b>{escape(str(dimension))}</b>, {escape(str(analysis))}: radiology lower than every other style "
            f"{verdict} (intersection-union test: {lower} of {len(pairs)} radiology-vs-other pairs reject at "
            f"alpha = {escape(str(alpha))} with radiology lower, largest p = {claim['p']:.3g}). Individually, "
            f"{adjusted} of {len(pairs)} pairs are significant after adjustment over all style pairs.</p>")
    return "\n".join(lines)


def metrics_html(metrics: dict | None) -> str:
    """How to read the metric-versus-experts section, and each metric's result in one sentence."""
    if not metrics or not len(metrics.get("overall", ())):
        return ""
    lines = ["<p>Each automated metric's panel value (image scores averaged over the panel) against the "
             "panel's median expert rating. A correlation is across panels, with its 95% CI from a bootstrap "
             "that resamples prompts with all their panels (a prompt's panels are not independent). It says "
             "whether the metric orders panels as the experts do, not whether its scale is calibrated to "
             "theirs. The rankings table says whether the metric orders styles and presets as the experts "
             "do (Kendall's tau-b of the level means: 1 the same order, -1 reversed).</p>"]
    for row in metrics["overall"].itertuples(index=False):
        name = escape(str(row.metric) + (f" ({row.scorer})" if str(row.scorer or "") else ""))
        if pd.isna(row.spearman_rho):
            lines.append(f"<p><b>{name}</b> vs {escape(str(row.dimension))}: no correlation ({escape(str(row.note))}"
                         ").</p>")
            continue
        ci = (f" (95% CI {row.rho_ci_low:.2f} to {row.rho_ci_high:.2f})" if pd.notna(row.rho_ci_low) else "")
        excludes = pd.notna(row.rho_ci_low) and (row.rho_ci_low > 0 or row.rho_ci_high < 0)
        verdict = "the interval excludes 0" if excludes else "the interval includes 0"
        lines.append(f"<p><b>{name}</b> vs {escape(str(row.dimension))}: Spearman rho = {row.spearman_rho:.2f}{ci}, "
                     f"{int(row.n_panels)} panels of {int(row.n_clusters)} prompts; {verdict}.</p>")
    return "\n".join(lines)


def notebook_to_html(notebook: str | Path, html_path: str | Path) -> Path:
    """The executed notebook as a self-contained HTML report, code cells hidden.

    Outputs are sanitised (nbconvert's ``sanitize_html``: no scripts, event handlers or
    javascript: links from cell outputs), in case a label ever reaches one unescaped.
    """
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
                            sanitize_html=True)
    body, _ = exporter.from_notebook_node(nbformat.read(str(notebook), as_version=4))
    html_path = Path(html_path)
    html_path.write_text(body, encoding="utf-8")
    return html_path
