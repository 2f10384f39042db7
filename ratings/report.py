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

TABLES = ("descriptives", "omnibus", "pairwise", "radiology", "presets", "detail", "agreement", "sensitivity")


def load_ratings(study: str | Path | None = None, table: str | Path | None = None) -> pd.DataFrame:
    """The tidy table of a study folder, or of an exported CSV/parquet file."""
    if (study is None) == (table is None):
        raise AnalysisError("give either a study folder or an exported table, not both or neither")
    if study is not None:
        from .io import tidy_table

        tidy = tidy_table(study, include_repeats=True)
    else:
        path = Path(table)
        if not path.exists():
            raise AnalysisError(f"{path}: file not found; export one with `python -m ratings export`")
        tidy = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
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


def write_report(tidy: pd.DataFrame, out: str | Path, aggregate: str = "median", nonsensical: str = "panel-zero",
                 correction: str = "holm", alpha: float = 0.05, n_boot: int = 2000, seed: int = 0) -> dict:
    """Run the analysis and write every table (CSV + LaTeX) and figure (SVG + PNG) into ``out``.

    Returns ``{"tables": {name: DataFrame}, "figures": {name: Figure paths}}``.
    """
    from . import plots, stats

    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    results = stats.analyze(tidy, aggregate=aggregate, nonsensical=nonsensical, correction=correction,
                            alpha=alpha, n_boot=n_boot, seed=seed)
    note = "SIMULATED RATINGS, not from clinicians" if is_simulated(tidy) else ""
    for name, frame in results.items():
        if frame is None or not isinstance(frame, pd.DataFrame):
            continue
        frame.attrs["simulated"] = bool(note)
        frame.to_csv(out / f"{name}.csv", index=False)
        # escape: a label such as "glide_cfg" or "\\input{...}" is text in the paper, not LaTeX
        latex = frame.to_latex(index=False, float_format="%.3g", na_rep="", escape=True,
                               caption=f"{name}{' (' + note + ')' if note else ''}", label=f"tab:{name}")
        (out / "tables" / f"{name}.tex").write_text(latex, encoding="utf-8")

    figures = {}
    for dimension in ("style", "content"):
        prepared = stats.prepare(tidy, dimension, aggregate="none", nonsensical=nonsensical)
        prepared.attrs["simulated"] = bool(note)
        pairwise = results["pairwise"]
        figures[f"scores-{dimension}"] = plots.save(plots.score_boxstrip(prepared, dimension), out / "figures",
                                                    f"scores-{dimension}")
        figures[f"pvalues-{dimension}"] = plots.save(plots.pvalue_heatmap(pairwise, dimension), out / "figures",
                                                     f"pvalues-{dimension}")
        figures[f"medians-{dimension}"] = plots.save(plots.medians_iqr(results["descriptives"], dimension),
                                                     out / "figures", f"medians-{dimension}")
        figures[f"distribution-{dimension}"] = plots.save(plots.distribution_bars(tidy, dimension),
                                                          out / "figures", f"distribution-{dimension}")
        presets = list(dict.fromkeys(prepared["preset"]))
        if {"glide-clip", "glide-cfg"} <= set(presets) or len(presets) == 2:
            a, b = ("glide-clip", "glide-cfg") if "glide-clip" in presets else presets[:2]
            figures[f"guidance-{dimension}"] = plots.save(
                plots.paired_slopes(prepared, "preset", a, b, ["prompt_id", "rater"], dimension=dimension), out / "figures",
                f"guidance-{dimension}")
        if {"short", "detailed"} <= set(prepared["detail"]):
            figures[f"detail-{dimension}"] = plots.save(
                plots.paired_slopes(prepared, "detail", "short", "detailed", ["style", "topic", "preset", "rater"],
                                    dimension=dimension),
                out / "figures", f"detail-{dimension}")
    if results.get("agreement") is not None and len(results["agreement"]):
        figures["agreement"] = plots.save(plots.agreement_heatmap(results["agreement"]), out / "figures", "agreement")
    return {"tables": results, "figures": figures}


def summary_html(tidy: pd.DataFrame, aggregate: str, nonsensical: str, correction: str, alpha: float) -> str:
    """The report's opening sentence: panels, raters, ratings, presets and the analysis path."""
    first = tidy[tidy["repeat"] == 0]
    presets = ", ".join(escape(str(p)) for p in sorted(first["preset"].astype(str).unique()))
    path = ", ".join(f"{name} = <code>{escape(str(value))}</code>" for name, value in
                     (("aggregate", aggregate), ("nonsensical", nonsensical), ("correction", correction)))
    return (f"<p><b>{first['panel'].nunique()} panels</b>, <b>{first['rater'].nunique()} raters</b>, "
            f"{len(first)} ratings; presets: {presets}. Analysis path: {path}, alpha = {escape(str(alpha))}.</p>")


def radiology_html(radiology: pd.DataFrame, alpha: float) -> str:
    """Per dimension, in how many (radiology style, other style) pairs radiology scored significantly lower."""
    lines = []
    for dimension, rows in radiology[radiology["a"] != "radiology"].groupby("dimension"):
        holds = (rows["p_adj"] < alpha) & (rows["effect"] < 0)
        lines.append(f"<p><b>{escape(str(dimension))}</b>: radiology styles are significantly lower in "
                     f"{int(holds.sum())} of {len(rows)} pairs (adjusted p &lt; {escape(str(alpha))}).</p>")
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
