"""The analysis report: tables (CSV and LaTeX) and figures from a tidy rating table.

``notebooks/30_analyze.ipynb`` calls :func:`load_ratings` and :func:`write_report`;
``python -m ratings analyze`` executes that notebook with papermill and turns the executed
copy into ``report.html``. Simulated ratings are labelled as such in every output.

Preset, style and topic names come from whoever made the study, and the report is an HTML
page someone opens in a browser: every label reaches it as escaped text (:func:`table_html`
and the sentences below escape theirs, :func:`markdown_html` escapes raw HTML in markdown), and
:func:`notebook_to_html` writes a page whose Content-Security-Policy runs no script and fetches
nothing, as a second line of defence. The page is self-contained: figures embedded, no MathJax
or require.js from a CDN, so it opens on a hospital network that is offline.

A study that holds answers of simulated raters (``sim-1``, ...) and of people is refused by
:func:`load_ratings` unless the user chooses raters or ``include_simulated``; any simulated
answer in an analysis puts :func:`simulated_note` (with the counts) on the report, every
table (a ``simulated`` column in the CSV, the LaTeX caption) and every figure.

Side-by-side comparisons of presets (:mod:`ratings.analysis.compare`) are read by
:func:`load_comparisons` and written by :func:`write_comparison_report` (their tables as
``comparison_*.csv``, their figures, and a section appended to ``methods.md``); a study that has
comparisons but no absolute ratings yet still gets a report (``load_ratings(...,
allow_empty=True)``, and :func:`notebook_to_html` leaves out the cells of the absolute analysis).
"""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from probes.scoretable import group_scores
from probes.tables import spreadsheet_safe_table, undo_spreadsheet_safe_table, write_table

from ..errors import AnalysisError
from .simulate import SIM_PREFIX

TABLES = ("ordinal", "composite", "mixed", "radiology", "raters", "effects", "flow", "flags", "descriptives",
          "at_least", "omnibus", "pairwise", "presets", "detail", "agreement", "sensitivity")
# analyze(...)["metrics"] (only where automated scores exist) -> report file names
METRIC_TABLES = {"overall": "metric_vs_experts", "by_group": "metric_vs_experts_by_group",
                 "rankings": "metric_rankings"}
# analyze_comparisons(...) -> report file names
COMPARISON_TABLES = {"sign_tests": "comparison_sign_tests", "shares": "comparison_shares",
                     "preset_shares": "comparison_preset_shares", "bradley_terry": "comparison_bradley_terry",
                     "win_probabilities": "comparison_win_probabilities",
                     "heterogeneity": "comparison_heterogeneity", "position": "comparison_position",
                     "agreement": "comparison_agreement"}
COMPARISONS_HEADING = "Comparisons (side by side)"
NO_RATINGS_CLASS = "mp-no-ratings"  # the notice of a report without absolute ratings (see notebook_to_html)
ABSOLUTE_TAG = "absolute"  # notebook cells of the absolute ratings' analysis


def load_ratings(study: str | Path | None = None, table: str | Path | None = None, raters=None,
                 include_simulated: bool = False, read_study=None, allow_empty: bool = False) -> pd.DataFrame:
    """The tidy table of a study folder, or of an exported CSV/parquet file.

    A study folder is read by ``read_study(study, include_repeats=True)``: the rating side's
    :func:`ratings.io.tidy_table`, which the caller passes in (the analysis never opens the
    rating app's database itself).

    An exported CSV's texts are read as the study holds them: the ``'`` that the export puts
    before a text starting with = + - @, a tab or a carriage return is taken off again.
    ``raters`` (a list, or a comma-separated string) keeps only those raters' answers. Answers
    of simulated raters and of people together are refused unless ``include_simulated``
    (see :func:`select_raters`); ``attrs["simulated"]`` holds :func:`simulated_note` ("" if none).
    A table without ratings is refused unless ``allow_empty`` (a study that has side-by-side
    comparisons but no absolute ratings yet): then it is returned empty, with its columns.
    """
    if (study is None) == (table is None):
        raise AnalysisError("give either a study folder or an exported table, not both or neither")
    if study is not None:
        if read_study is None:
            raise AnalysisError(f"{study}: a study folder is read by the rating side; pass "
                                "read_study=ratings.io.tidy_table, or an exported table (table=...)")
        tidy = read_study(study, include_repeats=True)
    else:
        path = Path(table)
        if not path.exists():
            raise AnalysisError(f"{path}: file not found; export one with `python -m ratings export`")
        if path.suffix == ".parquet":
            tidy = pd.read_parquet(path)
        else:
            # the CSV export writes a text such as "=1+1" as "'=1+1" (spreadsheet-safe); take the ' off again
            tidy = undo_spreadsheet_safe_table(pd.read_csv(path))
        for column in [c for c in tidy.columns if c.endswith("_score")]:
            tidy[column] = tidy[column].astype("Int64")
        if "nonsensical" in tidy:
            tidy["nonsensical"] = tidy["nonsensical"].astype(str).str.lower().isin(["true", "1"])
        if "repeat" not in tidy:
            tidy["repeat"] = 0
    if tidy.empty:
        if allow_empty:
            tidy = tidy.copy()
            tidy.attrs["simulated"] = ""
            return tidy
        raise AnalysisError("there are no ratings to analyse yet")
    tidy = select_raters(tidy, raters, include_simulated, source=study if study is not None else table)
    from .plots import order_styles

    # catalog order, not the shuffled order raters saw panels in; stats and plots follow it
    tidy["style"] = pd.Categorical(tidy["style"], categories=order_styles(tidy["style"].astype(str)))
    tidy.attrs["simulated"] = simulated_note(tidy)
    return tidy


def _simulated_rows(tidy: pd.DataFrame) -> pd.Series:
    return tidy["rater"].astype(str).str.startswith(SIM_PREFIX)


def is_simulated(tidy: pd.DataFrame) -> bool:
    """True where any answer in the table comes from a simulated rater (``sim-1``, ...)."""
    return bool(tidy.attrs.get("simulated")) or bool(len(tidy)) and bool(_simulated_rows(tidy).any())


def simulated_note(tidy: pd.DataFrame, what: str = "ratings") -> str:
    """"SIMULATED: 48 of 54 ratings from simulated raters", or "" where no answer is simulated.

    Counts first showings, as the report's summary does; ``what`` names the rows counted
    ("comparison answers" for a comparisons table).
    """
    if not len(tidy):
        return ""
    first = tidy[tidy["repeat"] == 0] if "repeat" in tidy else tidy
    simulated = int(_simulated_rows(first).sum())
    if not simulated:
        return ""
    if simulated == len(first):
        return f"SIMULATED: all {len(first)} {what} from simulated raters, none from clinicians"
    return f"SIMULATED: {simulated} of {len(first)} {what} from simulated raters"


def select_raters(tidy: pd.DataFrame, raters=None, include_simulated: bool = False, source=None) -> pd.DataFrame:
    """The answers of ``raters`` (all where None); simulated answers beside people's only on request.

    A study where ``make demo`` or ``python -m ratings simulate --study`` let simulated raters
    answer beside clinicians would otherwise be analysed as if clinicians gave every answer.
    """
    where = f"{source}: " if source is not None else ""
    if raters is not None:
        wanted = [r.strip() for r in (raters.split(",") if isinstance(raters, str) else raters) if str(r).strip()]
        known = list(dict.fromkeys(tidy["rater"].astype(str)))
        unknown = [r for r in wanted if r not in known]
        if not wanted or unknown:
            raise AnalysisError(f"{where}no answers from rater {', '.join(unknown) or '(none given)'}; raters "
                                f"who answered: {', '.join(known)}. Give --raters as a comma-separated list "
                                "of those.")
        tidy = tidy[tidy["rater"].astype(str).isin(wanted)].copy()
    simulated = _simulated_rows(tidy)
    if simulated.any() and not simulated.all() and not include_simulated:
        people = list(dict.fromkeys(tidy.loc[~simulated, "rater"].astype(str)))
        sims = list(dict.fromkeys(tidy.loc[simulated, "rater"].astype(str)))
        raise AnalysisError(
            f"{where}{int(simulated.sum())} answers come from simulated raters ({', '.join(sims)}) and "
            f"{int((~simulated).sum())} from people ({', '.join(people)}); they are not analysed together "
            f"unless you choose. Nothing was written. Give --raters {','.join(people)} for the people's answers "
            "only, or --include-simulated to analyse both (the report then says SIMULATED with the counts).")
    return tidy


def _group_scores(study) -> pd.DataFrame | None:
    """The study's distances to real images (``probes score --metrics fid,kid``), or None."""
    if study is None:
        return None
    try:
        table = group_scores(study)
    except Exception:  # a study without a scores table, or not a study: no distances
        return None
    return table if len(table) else None


def write_report(tidy: pd.DataFrame, out: str | Path, aggregate: str = "median", nonsensical: str = "exclude",
                 correction: str = "holm", alpha: float = 0.05, n_boot: int = 2000, seed: int = 0,
                 n_perm: int = 0, panel_scores: pd.DataFrame | None = None, study: str | Path | None = None,
                 reproduce: bool = False, plan: dict | None = None, flow_inputs: dict | None = None) -> dict:
    """Run the analysis and write every table (CSV + LaTeX), ``methods.md`` and every figure
    (SVG + PNG) into ``out``.

    Where automated scores exist (``panel_scores``, or the ``scores`` table of ``study``), also
    ``metric_vs_experts.csv``, ``metric_vs_experts_by_group.csv``, ``metric_rankings.csv`` and
    the figure ``metrics-vs-experts``; ``tables["metrics"]`` then holds those tables (by the
    keys of :data:`METRIC_TABLES`, and ``panels``). A ``study`` with FID/KID scores also gets
    ``distances.csv`` (per preset and style, against the real reference images). ``reproduce``
    also writes ``reproduction.csv``, the published study's analysis exactly
    (:func:`ratings.analysis.reproduce.published_analysis`), as ``tables["reproduction"]``.
    ``plan``: the locked analysis plan the run follows (see :func:`ratings.analysis.protocol.analyze`).

    A table with no rows (nothing to compare, or a model the design could not fit: methods.md's
    notes say why) gets no file.

    Returns ``{"tables": {name: DataFrame}, "figures": {name: Figure paths}, "methods": str}``.
    """
    from . import plots, protocol, stats

    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    results = protocol.analyze(tidy, aggregate=aggregate, nonsensical=nonsensical, correction=correction,
                               alpha=alpha, n_boot=n_boot, seed=seed, n_perm=n_perm, panel_scores=panel_scores,
                               study=study, plan=plan, flow_inputs=flow_inputs)
    methods = results.pop("methods")
    note = tidy.attrs.get("simulated") if isinstance(tidy.attrs.get("simulated"), str) else simulated_note(tidy)
    (out / "methods.md").write_text(markdown_safe((f"> {note}\n\n" if note else "") + methods), encoding="utf-8")
    metrics = results.get("metrics")
    written = {**results, **{file: metrics[key] for key, file in METRIC_TABLES.items()}} if metrics else results
    distances = _group_scores(study)
    if distances is not None:  # FID / KID per preset and style against real images: no panel to correlate
        written = {**written, "distances": distances}
    _write_tables(written, out, note)

    if reproduce:  # the published study's own analysis, beside medprobe's (ratings.analysis.reproduce)
        from .reproduce import published_analysis

        reproduction = published_analysis(tidy)
        reproduction.attrs["simulated"] = note
        write_table(reproduction.assign(simulated=note) if note else reproduction, out / "reproduction.csv")
        results["reproduction"] = reproduction

    figures = {}

    def save(name, figure):
        figures[name] = plots.save(figure, out / "figures", name)

    ordinal = results["ordinal"]
    contrasts = ordinal[ordinal["kind"] == "contrast"] if "kind" in ordinal else ordinal.iloc[:0]
    for dimension in stats.score_dimensions(tidy):
        prepared = stats.prepare(tidy, dimension, aggregate=aggregate, nonsensical=nonsensical)
        prepared.attrs["simulated"] = note
        if (contrasts["dimension"] == dimension).any():
            save(f"odds-ratios-{dimension}", plots.ordinal_forest(contrasts, dimension, alpha))
            if contrasts.loc[contrasts["dimension"] == dimension, "p"].notna().any():  # else an empty grid
                save(f"pvalues-ordinal-{dimension}", plots.pvalue_heatmap(contrasts, dimension, alpha))
        shares = results["at_least"]
        points = pd.to_numeric(shares.loc[shares["dimension"] == dimension, "threshold"], errors="coerce")
        # the middle of the scale where the answers reach it; a pilot whose answers never do shows every point
        threshold = 2 if np.isclose(points, 2).any() else None
        save(f"shares-{dimension}", plots.share_at_least(shares, dimension, threshold=threshold,
                                                          unit="rating" if aggregate == "none" else "panel"))
        save(f"scores-{dimension}", plots.score_boxstrip(prepared, dimension))
        save(f"pvalues-{dimension}", plots.pvalue_heatmap(results["pairwise"], dimension, alpha))
        save(f"medians-{dimension}", plots.medians_iqr(results["descriptives"], dimension))
        save(f"distribution-{dimension}", plots.distribution_bars(tidy, dimension))
        per_rater = stats.prepare(tidy, dimension, aggregate="none", nonsensical=nonsensical)
        per_rater.attrs["simulated"] = note
        presets = list(dict.fromkeys(per_rater["preset"]))
        if {"glide-clip", "glide-cfg"} <= set(presets) or len(presets) == 2:
            a, b = ("glide-clip", "glide-cfg") if {"glide-clip", "glide-cfg"} <= set(presets) else presets[:2]
            save(f"guidance-{dimension}", plots.paired_slopes(per_rater, "preset", a, b, ["prompt_id", "rater"],
                                                              dimension=dimension))
        if {"short", "detailed"} <= set(per_rater["detail"]):
            save(f"detail-{dimension}", plots.paired_slopes(per_rater, "detail", "short", "detailed",
                                                            ["style", "topic", "preset", "rater"], dimension=dimension))
        raters = results.get("raters")
        if raters is not None and len(raters) and "kind" in raters:
            own = raters[(raters["kind"] == "rater") & (raters["dimension"] == dimension)]
            if len(own) and own["odds_ratio"].notna().any():
                own.attrs["simulated"] = note
                save(f"raters-{dimension}", plots.rater_forest(own, pooled=contrasts[contrasts["dimension"] == dimension],
                                                               dimension=dimension, alpha=alpha))
    flow = results.get("flow")
    if flow is not None and len(flow):
        from .flow import flow_figure

        first = flow[flow["dimension"] == flow["dimension"].iloc[0]].copy()
        first.attrs["simulated"] = note
        save("flow", flow_figure(first))
    if results.get("agreement") is not None and len(results["agreement"]):
        save("agreement", plots.agreement_heatmap(results["agreement"]))
    if metrics and len(metrics["panels"]):
        metrics["panels"].attrs["simulated"] = note
        save("metrics-vs-experts", plots.metric_vs_experts(metrics["panels"], metrics["overall"]))
    return {"tables": results, "figures": figures, "methods": methods}


def _write_tables(written: dict, out: Path, note: str) -> None:
    """Each DataFrame of ``written`` as ``out/<name>.csv`` and ``out/tables/<name>.tex``; an empty one gets no file."""
    for name, frame in written.items():
        if frame is None or not isinstance(frame, pd.DataFrame) or frame.empty:
            continue  # nothing to compare or a model that could not be fitted (the notes say why): no file
        frame.attrs["simulated"] = note
        # a copy of a CSV says SIMULATED on every row, not only in a caption it may lose
        # opened in spreadsheets like the exports: a label "=1+2" is text there, not a formula
        spreadsheet_safe_table(frame.assign(simulated=note) if note else frame).to_csv(
            out / f"{name}.csv", index=False, lineterminator="\r\n")
        # escape: a label such as "glide_cfg" or "\\input{...}" is text in the paper, not LaTeX
        latex = frame.to_latex(index=False, float_format="%.3g", na_rep="", escape=True,
                               caption=f"{name}{' (' + note + ')' if note else ''}", label=f"tab:{name}")
        (out / "tables" / f"{name}.tex").write_text(latex, encoding="utf-8")


# --- side-by-side comparisons ---------------------------------------------------------------

def load_comparisons(study: str | Path | None = None, table: str | Path | None = None, read_comparisons=None,
                     raters=None, include_simulated: bool = False) -> pd.DataFrame:
    """The side-by-side comparisons of a study folder, or of an exported CSV/parquet file.

    A study folder is read by ``read_comparisons(study, include_repeats=True)``: the rating side's
    :func:`ratings.io.comparison_table`, which the caller passes in (the analysis never opens the
    study's database itself). A CSV's texts are read as the study holds them (the ``'`` the
    export puts before a text starting with = + - @ is taken off again). Neither a study nor a
    table, or a study without comparisons, gives an empty table with the columns
    :data:`ratings.analysis.compare.COMPARISON_COLUMNS`.

    ``raters`` keeps only those raters' answers (a rater who answered no comparison is no
    error here: :func:`load_ratings` checks the names); answers of simulated raters beside
    people's are refused unless ``include_simulated`` (:func:`select_raters`).
    ``attrs["simulated"]`` holds :func:`simulated_note` ("" if none).
    """
    from .compare import COMPARISON_COLUMNS, check_comparisons

    if study is not None and table is not None:
        raise AnalysisError("give either a study folder or an exported comparisons table, not both")
    if study is not None:
        if read_comparisons is None:
            raise AnalysisError(f"{study}: a study folder is read by the rating side; pass "
                                "read_comparisons=ratings.io.comparison_table, or an exported table (table=...)")
        frame = read_comparisons(study, include_repeats=True)  # repeats: intra-rater agreement
        frame = pd.DataFrame(columns=COMPARISON_COLUMNS) if frame is None else frame
    elif table is not None:
        path = Path(table)
        if not path.exists():
            raise AnalysisError(f"{path}: file not found; export the comparisons with `python -m ratings export` "
                                "or give the path of a comparisons CSV")
        frame = (pd.read_parquet(path) if path.suffix == ".parquet"
                 else undo_spreadsheet_safe_table(pd.read_csv(path)))
        for column in ("nonsensical_left", "nonsensical_right"):
            if column in frame and frame[column].dtype != bool:
                frame[column] = frame[column].astype(str).str.lower().isin(["true", "1"])
        if "repeat" in frame:
            frame["repeat"] = pd.to_numeric(frame["repeat"]).fillna(0).astype(int)
        if "seconds" in frame:
            frame["seconds"] = pd.to_numeric(frame["seconds"], errors="coerce").astype(float)
        for column in ("choice", "winner"):
            if column in frame:
                frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    else:
        frame = pd.DataFrame(columns=COMPARISON_COLUMNS)
    if frame.empty:
        empty = frame.reindex(columns=list(dict.fromkeys([*COMPARISON_COLUMNS, *frame.columns])))
        empty.attrs["simulated"] = ""
        return empty
    check_comparisons(frame)
    source = study if study is not None else table
    if raters is not None:
        wanted = [r.strip() for r in (raters.split(",") if isinstance(raters, str) else raters) if str(r).strip()]
        frame = frame[frame["rater"].astype(str).isin(wanted)].copy()
        if frame.empty:
            empty = frame.copy()
            empty.attrs["simulated"] = ""
            return empty
    frame = select_raters(frame, None, include_simulated, source=source)
    frame.attrs["simulated"] = simulated_note(frame, what="comparison answers")
    return frame


def write_comparison_report(comparisons: pd.DataFrame, out: str | Path, alpha: float = 0.05,
                            correction: str = "holm", n_boot: int = 2000, seed: int = 0) -> dict:
    """The side-by-side analysis (:func:`ratings.analysis.compare.analyze_comparisons`) written into ``out``.

    Its tables as CSV and LaTeX under the names of :data:`COMPARISON_TABLES`
    (``comparison_sign_tests.csv``, ...), the figures ``comparison-wins-style`` and
    ``comparison-wins-style-group`` (each preset's share of decisive answers won, per style and
    per style group, :func:`ratings.analysis.plots.comparison_wins`), and its methods paragraph
    appended to ``methods.md`` under the heading :data:`COMPARISONS_HEADING` (the file is
    made where :func:`write_report` has not made it; a second call replaces the section).
    Simulated answers are labelled in every table, figure and the methods.

    Returns ``{"tables": {key: DataFrame}, "figures": {name: paths}, "methods": str,
    "conclusions": [one sentence per dimension]}``.
    """
    from . import plots
    from .compare import analyze_comparisons

    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    note = (comparisons.attrs.get("simulated") if isinstance(comparisons.attrs.get("simulated"), str)
            else simulated_note(comparisons, what="comparison answers"))
    marked = comparisons.copy()
    marked.attrs["simulated"] = note
    results = analyze_comparisons(marked, alpha=alpha, correction=correction, n_boot=n_boot, seed=seed)
    tables = {key: frame for key, frame in results.items() if isinstance(frame, pd.DataFrame)}
    _write_tables({COMPARISON_TABLES[key]: frame for key, frame in tables.items()}, out, note)
    figures = {}
    shares = tables["preset_shares"]
    shares.attrs["simulated"] = note
    for by, name in (("style", "comparison-wins-style"), ("style_group", "comparison-wins-style-group")):
        if (shares["by"] == by).any():
            figures[name] = plots.save(plots.comparison_wins(shares, by=by), out / "figures", name)
    methods = results["methods"]
    path = out / "methods.md"
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    heading = f"## {COMPARISONS_HEADING}"
    existing = existing.split(f"\n\n{heading}\n", 1)[0].rstrip()
    if existing:  # after the absolute report's methods: the section says SIMULATED itself
        text = f"{existing}\n\n{heading}\n\n" + (f"> {note}\n\n" if note else "") + f"{methods}\n"
    else:  # a report of comparisons alone: the file opens with the label, as write_report's does
        text = (f"> {note}\n\n" if note else "") + f"{heading}\n\n{methods}\n"
    path.write_text(markdown_safe(text), encoding="utf-8")
    return {"tables": tables, "figures": figures, "methods": methods,
            "conclusions": results["conclusions"].splitlines()}


def comparisons_html(report: dict, comparisons: pd.DataFrame) -> str:
    """The comparisons section's opening: its heading, the SIMULATED banner where it applies, and
    one sentence per dimension from the sign tests' adjusted p (HTML, every label escaped)."""
    note = (comparisons.attrs.get("simulated") if isinstance(comparisons.attrs.get("simulated"), str)
            else simulated_note(comparisons, what="comparison answers"))
    banner = (f'<div class="mp-banner" role="alert"><p><b>{escape(note)}</b></p><p>Simulated raters are not '
              "clinicians: these comparisons show how the section reads, not which generator is better.</p></div>"
              if note else "")
    sign = report["tables"]["sign_tests"]
    first = comparisons[pd.to_numeric(comparisons["repeat"]).fillna(0) == 0]
    items = "".join(f"<li>{escape(line)}</li>" for line in report["conclusions"])
    return (f'<h2 id="comparisons">{escape(COMPARISONS_HEADING)}</h2>{banner}'
            f"<p>{first['rater'].nunique()} raters compared the panels of two presets side by side for "
            f"{first['prompt_id'].nunique()} prompts (left and right randomised per rater; "
            f"{len(sign)} preset pair x dimension tests in one family). The unit is the prompt: each prompt goes "
            "to the preset its raters chose more often, and an exact sign test asks whether prompts split "
            "50:50.</p>"
            f'<div class="mp-conclusions"><ul>{items}</ul></div>')


def comparison_summary_html(report: dict) -> str:
    """The comparisons' sentences for the report's opening, pointing to their section (HTML)."""
    items = "".join(f"<li>{escape(line)}</li>" for line in report["conclusions"])
    return (f'<div class="mp-conclusions"><p><b>Side-by-side comparisons</b> (the section '
            f'<a href="#comparisons">{escape(COMPARISONS_HEADING)}</a> below)</p><ul>{items}</ul></div>')


def no_ratings_html(comparisons: pd.DataFrame) -> str:
    """The notice of a report on side-by-side comparisons alone (the study has no absolute ratings yet)."""
    first = comparisons[pd.to_numeric(comparisons["repeat"]).fillna(0) == 0] if "repeat" in comparisons else comparisons
    return (f'<div class="{NO_RATINGS_CLASS}" role="note"><p><b>This study has no absolute ratings yet</b>: the '
            f"report holds the side-by-side comparisons only ({len(first)} answers of "
            f"{first['rater'].nunique()} raters).</p></div>")


_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def markdown_safe(text: str) -> str:
    """Markdown whose labels cannot become markup where it is rendered: a ``<`` that would open a
    tag (``<script>``, ``</p>``, ``<!--``) is written ``&lt;``, which every renderer shows as ``<``;
    ``p < 0.05`` and the rest of the text are left as written."""
    return _TAG_START.sub("&lt;", text)


def summary_html(tidy: pd.DataFrame, aggregate: str, nonsensical: str, correction: str, alpha: float,
                 plan: dict | None = None) -> str:
    """The report's opening sentence: panels, raters, ratings, presets and the analysis path, and
    whether the analysis followed its locked plan (``plan``, see :func:`ratings.analysis.protocol.analyze`)."""
    from .protocol import plan_sentence

    said = plan_sentence(plan) or ("No analysis plan was registered for this study (python -m ratings plan)."
                                   if plan is None else "")
    first = tidy[tidy["repeat"] == 0]
    presets = ", ".join(escape(str(p)) for p in sorted(first["preset"].astype(str).unique()))
    path = ", ".join(f"{name} = <code>{escape(str(value))}</code>" for name, value in
                     (("aggregate", aggregate), ("nonsensical", nonsensical), ("correction", correction)))
    return (f"<p><b>{first['panel'].nunique()} panels</b>, <b>{first['rater'].nunique()} raters</b>, "
            f"{first['topic'].nunique()} topics (the clusters), {len(first)} ratings; presets: {presets}. "
            f"Analysis path: {path}, alpha = {escape(str(alpha))}. {escape(said)}</p>")


def radiology_html(radiology: pd.DataFrame, alpha: float) -> str:
    """Per dimension and analysis: does "radiology is lower than every other style" hold?"""
    if radiology is None or radiology.empty or "claim" not in radiology:
        return "<p>No radiology claim to test: the study has no radiology styles and other styles.</p>"
    lines = []
    for (dimension, analysis), rows in radiology.groupby(["dimension", "analysis"], sort=False):
        if not (rows["claim"] == "conjunction").any():  # part (a), the flags: its own sentence in the conclusions
            continue
        pairs, claim = rows[rows["claim"] == "pair"], rows[rows["claim"] == "conjunction"].iloc[0]
        lower = int(((pairs["p"] < alpha) & (pairs["effect"] < 0)).sum())
        adjusted = int(((pairs["p_adj"] < alpha) & (pairs["effect"] < 0)).sum())
        verdict = "<b>holds</b>" if claim["holds"] else "<b>does not hold</b>"
        if pd.isna(claim["p"]):
            reason = next((str(n) for n in rows.get("note", pd.Series(dtype=object)).dropna() if str(n).strip()),
                          "the pairs have no p-value in this design")
            lines.append(f"<p><b>{escape(str(dimension))}</b>, {escape(str(analysis))}: radiology lower than every "
                         f"other style <b>cannot be tested</b> ({escape(reason)}).</p>")
            continue
        lines.append(
            f"<p><b>{escape(str(dimension))}</b>, {escape(str(analysis))}: radiology lower than every other style "
            f"{verdict} (intersection-union test: {lower} of {len(pairs)} radiology-vs-other pairs have an "
            f"unadjusted two-sided p &lt; {escape(str(alpha))} with radiology lower, largest p = {claim['p']:.3g}). "
            f"Individually, {adjusted} of {len(pairs)} pairs hold (p_adj &lt; {escape(str(alpha))} after adjustment "
            "over all style pairs, radiology lower): the pairs' labels in radiology.csv.</p>")
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


def reproduction_html(tables: dict, tidy: pd.DataFrame, nonsensical: str, correction: str, alpha: float) -> str:
    """The section on the published study's analysis (``--reproduce``): what it did, what it found
    on this study, why the primary analysis differs, and its table; "" without ``reproduction``."""
    from .reproduce import reproduction_text
    from .stats import first_showings, radiology_styles

    table = tables.get("reproduction")
    if table is None:
        return ""
    text = reproduction_text(table, radiology_styles(first_showings(tidy)), nonsensical=nonsensical,
                             correction=correction, alpha=alpha)
    columns = ["dimension", "preset", "a", "b", "median_a", "q1_a", "q3_a", "median_b", "q1_b", "q3_b", "n_a", "n_b",
               "statistic", "p"] + (["note"] if table["note"].notna().any() else [])
    return ('<h2 id="reproduction">The published analysis, reproduced</h2>' + markdown_html(text)
            + table_html(table, "reproduction", caption="Every style pair as the published study tested it: "
                         "Kruskal-Wallis on prompt medians, uncorrected",
                         columns=columns, reasons={None: "no p-value for this pair"}))


# --- the HTML report's parts: every label escaped here, where it enters HTML ----------------

MISSING = "\u2013"  # what a missing value shows as; its reason is under the table
P_COLUMNS = {"p", "p_adj", "p_naive", "p_clustered", "p_perm", "p_topic", "p_wald", "p_wald_topic"}


def _cell(value, column: str) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if column in P_COLUMNS:
            return "&lt;0.001" if value < 0.001 else f"{value:.3f}"
        if float(value).is_integer() and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.3g}"
    return escape(str(value))


def table_html(frame: pd.DataFrame | None, name: str, columns=None, max_rows: int = 80, reasons: dict | None = None,
               caption: str | None = None, csv: str | None = None) -> str:
    """A table as a reader sees it: its header, its rows (the first ``max_rows`` and a link to the
    CSV beside the report), a missing value as a dash with the reason under the table.

    ``reasons`` maps a column to why it can be empty (key None: any other column); a row's own
    ``note``, where it has one, is the reason for that row. Columns empty in every row are left
    out. A table marked simulated (``attrs["simulated"]``) says so in its caption.
    """
    if frame is None or not len(frame):
        return f"<p>No rows in <i>{escape(name)}</i> for this study.</p>"
    simulated = frame.attrs.get("simulated")
    shown = frame[[c for c in (columns or frame.columns) if c in frame.columns]]
    if columns is None:  # a column empty in every row says nothing; one asked for by name shows its dashes
        shown = shown[[c for c in shown.columns if shown[c].notna().any()]]
    notes = frame["note"] if "note" in frame else None
    reasons = reasons or {}
    missing: dict[str, list[str]] = {}
    rows = []
    for i, (index, row) in enumerate(shown.iterrows()):
        if i == max_rows:
            break
        cells = []
        for column, value in row.items():
            if column == "note" and pd.isna(value):
                cells.append("<td></td>")  # a row without a note has nothing to explain
            elif pd.isna(value) if not isinstance(value, (list, tuple, np.ndarray)) else False:
                note = notes.loc[index] if notes is not None else None
                reason = (str(note) if note is not None and pd.notna(note) and str(note).strip()
                          else reasons.get(column, reasons.get(None, "does not apply to this row")))
                missing.setdefault(reason, [])
                if column not in missing[reason]:
                    missing[reason].append(column)
                cells.append(f'<td class="mp-missing" title="{escape(reason)}">{MISSING}</td>')
            else:
                text = _cell(value, column)
                cells.append(f'<td class="mp-long">{text}</td>' if len(text) > 40 else f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f'<th scope="col">{escape(str(c))}</th>' for c in shown.columns)
    title = escape(caption or name) + (f' <span class="mp-simulated">{escape(simulated)}</span>'
                                       if isinstance(simulated, str) and simulated else "")
    parts = [f'<div class="mp-table"><table><caption>{title}</caption><thead><tr>{head}</tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table>']
    link = escape(csv or f"{name}.csv")
    if len(shown) > max_rows:
        parts.append(f'<p class="mp-more">The first {max_rows} of {len(shown)} rows; all of them in '
                     f'<a href="{link}">{link}</a> beside this report.</p>')
    for reason, where in missing.items():
        parts.append(f'<p class="mp-note">{MISSING} in {escape(", ".join(map(str, where)))}: {escape(reason)}.</p>')
    return "".join(parts) + "</div>"


def markdown_html(text: str) -> str:
    """Markdown as HTML, any raw HTML in it (a label, say) shown as text."""
    import mistune

    return mistune.create_markdown(escape=True, plugins=["table"])(text)


def banner_html(tidy: pd.DataFrame) -> str:
    """The SIMULATED banner with the counts, or "" where every answer is a person's."""
    note = tidy.attrs.get("simulated") if isinstance(tidy.attrs.get("simulated"), str) else simulated_note(tidy)
    if not note:
        return ""
    raters = sorted(set(tidy.loc[_simulated_rows(tidy), "rater"].astype(str)))
    return (f'<div class="mp-banner" role="alert"><p><b>{escape(note)}</b></p><p>Simulated raters '
            f"({escape(', '.join(raters))}, from <code>python -m ratings simulate</code>) are not clinicians. "
            "Their answers show how the report reads and how much power the design has; they say nothing "
            "about any generator. Every table and figure below carries this label.</p></div>")


def notices_html(notices) -> str:
    """What the analysis could not support (small study, estimates that are not estimable), as text."""
    notices = [str(n) for n in (notices or []) if str(n).strip()]
    if not notices:
        return ""
    items = "".join(f"<li>{escape(n)}</li>" for n in notices)
    return f'<div class="mp-notices" role="note"><p><b>Read this first</b></p><ul>{items}</ul></div>'


def _label(dimension: str) -> str:
    return escape(str(dimension).replace("_", " ").capitalize())


def _p_phrase(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _style(style) -> str:
    from .plots import style_label

    return escape(style_label(str(style)))


def _sensitivity_sentence(rows: pd.DataFrame) -> str:
    """What the radiology claim's verdict hinges on across the sensitivity paths, as one sentence (HTML).

    ``rows`` are the claim's rows of :func:`ratings.analysis.protocol.sensitivity` (one per path).
    Where the nonsensical policy decides it, the sentence says the verdict rests on the rule for
    nonsensical flags, and names panel-zero as the published study's rule.

    Examples
    --------
    >>> import pandas as pd
    >>> rows = pd.DataFrame({'hinges_on': ['the nonsensical policy (holds only under panel-zero)'] * 12,
    ...     'conclusion': ['depends on the nonsensical policy: holds only under panel-zero (3 of 12 paths), '
    ...                    'fails under zero, exclude and lowest'] * 12})
    >>> print(_sensitivity_sentence(rows))  # HTML: the apostrophe is escaped
    Across the 12 analysis paths of the sensitivity analysis, the verdict rests on the rule for nonsensical flags: it holds only under panel-zero, the published study&#x27;s rule (3 of 12 paths), and fails under zero, exclude and lowest
    """
    conclusion = str(rows["conclusion"].iloc[0])
    hinges = str(rows["hinges_on"].iloc[0]) if "hinges_on" in rows else ""
    if hinges == "no single choice":
        said = conclusion.replace(
            "within the ordinal model, the nonsensical policy decides it (holds only under panel-zero)",
            "within the ordinal model the verdict rests on the rule for nonsensical flags: it holds only under "
            "panel-zero, the published study's rule")
    elif conclusion.startswith("depends on the nonsensical policy: "):
        rest = conclusion[len("depends on the nonsensical policy: "):]
        rest = rest.replace("panel-zero (", "panel-zero, the published study's rule (", 1).replace(
            "), fails under", "), and fails under", 1)
        said = f"the verdict rests on the rule for nonsensical flags: it {rest}"
    elif conclusion.startswith("depends on"):
        said = f"the verdict {conclusion}"
    else:
        said = f"the claim {conclusion}"
    return escape(f"Across the {len(rows)} analysis paths of the sensitivity analysis, {said}")


def _claim_verdict(claim, pairs, alpha, what) -> str:
    """One analysis' verdict on the radiology claim, in words (HTML)."""
    lower = int(((pairs["p_adj"] < alpha) & (pairs["effect"] < 0)).sum())
    if pd.isna(claim["p"]):
        return f"<b>cannot be tested</b> {what}: its odds ratios have no p-value in this design (see the notices above)"
    if claim["holds"]:
        return (f"<b>holds</b> {what}: radiology is lower in every one of the {len(pairs)} radiology-versus-other "
                f"pairs (intersection-union test, each pair at unadjusted two-sided p &lt; {escape(str(alpha))}; "
                f"largest {_p_phrase(claim['p'])}); on their own, {lower} of the {len(pairs)} pairs are significant "
                "after adjustment over all style pairs")
    return (f"<b>does not hold</b> {what}: radiology is significantly lower in {lower} of {len(pairs)} "
            "radiology-versus-other pairs after adjustment over all style pairs")


def _flag_conclusion(radiology: pd.DataFrame, alpha: float) -> str:
    """Part (a)'s sentence: are radiology panels flagged nonsensical more often? (HTML list item)"""
    from .protocol import FLAG_DIMENSION

    rows = radiology[radiology["dimension"] == FLAG_DIMENSION] if "dimension" in radiology else radiology.iloc[:0]
    if rows.empty:
        return ""
    row = rows.iloc[0]
    counts = ""
    if pd.notna(row.get("n_a")) and pd.notna(row.get("n_b")):
        counts = (f": {int(row['flagged_a'])} of {int(row['n_a'])} radiology answers flagged, "
                  f"{int(row['flagged_b'])} of {int(row['n_b'])} of the other styles")
    if pd.isna(row["p"]):
        said = f"<b>cannot be tested</b>{counts} ({escape(str(row.get('note') or 'too few topics'))})"
    else:
        ci = (f", 95% CI {row['or_ci_low']:.2g} to {row['or_ci_high']:.2g}" if pd.notna(row["or_ci_low"]) else "")
        said = (f"<b>{'holds' if row['holds'] else 'does not hold'}</b>{counts} (odds ratio "
                f"{row['odds_ratio']:.3g}{ci}, {_p_phrase(row['p'])}; Firth logistic model, topic-clustered)")
    return (f"<li><b>Nonsensical flags</b> (primary analysis, part a): &ldquo;radiology panels are flagged "
            f"nonsensical more often than those of the other styles&rdquo; {said}.</li>")


def conclusions_html(tables: dict, tidy: pd.DataFrame, alpha: float) -> str:
    """The report's opening: what holds, and what a verdict depends on, in a clinician's words.

    Per dimension the primary analysis' part (b) (the styles among the answers not flagged
    nonsensical), with the composite and the rank tests beside it and what the sensitivity
    analysis says the verdict rests on; then part (a), the flags themselves.
    """
    from .protocol import COMPOSITE, FLAG_DIMENSION, PRIMARY

    radiology = tables.get("radiology")
    sensitivity = tables.get("sensitivity")
    lines = []
    scored = (radiology[radiology["dimension"] != FLAG_DIMENSION] if radiology is not None and len(radiology)
              and "dimension" in radiology else None)
    if scored is not None and len(scored) and "claim" in scored and (scored["claim"] == "conjunction").any():
        for dimension, rows in scored.groupby("dimension", sort=False):
            claims = rows[rows["claim"] == "conjunction"]
            primary = claims[claims["analysis"] == PRIMARY]
            claim = primary.iloc[0] if len(primary) else claims.iloc[0]
            pairs = rows[(rows["claim"] == "pair") & (rows["analysis"] == claim["analysis"])]
            what = ("among the answers not flagged nonsensical (primary analysis, part b: ordinal model of each "
                    "rater's own unflagged answers)" if claim["analysis"] == PRIMARY else f"({escape(str(claim['analysis']))})")
            verdict = _claim_verdict(claim, pairs, alpha, what)
            agree = []
            for _, other in claims[claims["analysis"] != claim["analysis"]].iterrows():
                name = ("the rank tests on topic means" if "wilcoxon" in str(other["analysis"])
                        else "the composite (a flag counted as the lowest score)" if other["analysis"] == COMPOSITE
                        else escape(str(other["analysis"])))
                said = ("cannot test it" if pd.isna(other["p"]) else "find it holds" if other["holds"]
                        else "find it does not hold")
                agree.append(f"{name} {said}")
            robust = ""
            if sensitivity is not None and len(sensitivity) and "conclusion" in sensitivity:
                row = sensitivity[(sensitivity["dimension"] == dimension) & (sensitivity["a"] == "radiology")]
                if len(row):
                    robust = f". {_sensitivity_sentence(row)}"
            lines.append(f"<li><b>{_label(dimension)}</b>: &ldquo;radiology images (x-ray, MRI, CT) are rated lower "
                         f"than every other style&rdquo; {verdict}" + (f" ({'; '.join(agree)})" if agree else "")
                         + f"{robust}.</li>")
    else:
        lines.append("<li>There is no radiology claim to test: the study does not have radiology and other "
                     "styles side by side.</li>")
    if radiology is not None and len(radiology):
        lines.append(_flag_conclusion(radiology, alpha))
    descriptives = tables.get("descriptives")
    if descriptives is not None and len(descriptives) and {"style", "mean"} <= set(descriptives.columns):
        styles = descriptives[descriptives["style"].notna()]
        for dimension, rows in styles.groupby("dimension", sort=False):
            rows = rows.dropna(subset=["mean"]).sort_values("mean")
            if len(rows) > 1:
                top, bottom = rows.iloc[-1], rows.iloc[0]
                lines.append(f"<li><b>{_label(dimension)}</b>, highest rated style: {_style(top['style'])} "
                             f"(mean {top['mean']:.1f} of 4); lowest: {_style(bottom['style'])} "
                             f"(mean {bottom['mean']:.1f}).</li>")
    first = tidy[tidy["repeat"] == 0] if "repeat" in tidy else tidy
    topics, raters = first["topic"].nunique(), first["rater"].nunique()
    depends = [f"{topics} topics are the independent units (clusters): each p-value treats a topic's prompts "
               f"as one piece of evidence, so the verdicts rest on {topics} topics, not on "
               f"{len(first)} ratings" + (" &mdash; with this few, p-values are rough and wide" if topics < 10
                                           else "") + ".",
               f"{raters} rater{'s' if raters != 1 else ''} answered; a verdict is about these raters' judgement "
               "of these prompts (raters are fixed effects: inference is conditional on them)."]
    agreement = tables.get("agreement")
    if agreement is not None and len(agreement) and "measure" in agreement:
        alphas = agreement[agreement["measure"].astype(str).str.startswith("krippendorff")]
        if len(alphas):
            values = ", ".join(f"{escape(str(r.dimension))} {r.value:.2f}" for r in alphas.itertuples() if pd.notna(r.value))
            if values:
                depends.append(f"How much the raters agree (Krippendorff's alpha, 1 = perfect, 0 = chance): {values}.")
    depends.append(f"Significance is at alpha = {escape(str(alpha))}, adjusted over all style pairs of a dimension.")
    if is_simulated(tidy):
        depends.append("These ratings are SIMULATED: they show what the report looks like, not what clinicians think.")
    items = "".join(f"<li>{d}</li>" for d in depends)
    return (f'<div class="mp-conclusions"><h2 id="conclusions">Conclusions</h2><ul>{"".join(lines)}</ul>'
            f"<p><b>What these verdicts depend on</b></p><ul>{items}</ul></div>")


# The lab template without anything fetched from a network: no require.js, MathJax or mermaid
# from a CDN (a hospital network is often offline), and a Content-Security-Policy that runs no
# script and loads nothing but the page's own styles and embedded (data:) images.
REPORT_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
              "script-src 'none'; base-uri 'none'; form-action 'none'")
REPORT_CSS = """
.mp-banner { border: 3px solid #a51d1d; background: #fdecea; padding: 0.4em 1em; margin: 0.5em 0 1em; }
.mp-banner b, .mp-simulated { color: #a51d1d; }
.mp-simulated { font-weight: bold; margin-left: 0.5em; }
.mp-notices { border-left: 4px solid #b26a00; background: #fff6e5; padding: 0.2em 1em; margin: 0.5em 0 1em; }
.mp-conclusions { font-size: 1.05em; max-width: 60em; }
.mp-conclusions li { margin: 0.3em 0; }
.mp-table { overflow-x: auto; margin: 0.5em 0 1.5em; }
.mp-table caption { caption-side: top; text-align: left; font-weight: bold; padding: 0.3em 0; }
.mp-table table { font-size: 12px; }
.mp-table th { position: sticky; top: 0; background: #f0f0f0; }
.mp-table td, .mp-table th { white-space: nowrap; }
.mp-table td.mp-long { white-space: normal; min-width: 18em; text-align: left; }
.mp-table td.mp-missing { color: #777; text-align: center; }
.mp-note, .mp-more { font-size: 12px; color: #444; margin: 0.2em 0; }
.jp-RenderedImage img { max-width: min(100%, 1100px); height: auto; }
main { max-width: 1200px; margin: 0 auto; padding: 0 1em; }
"""
REPORT_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head -%}
<meta http-equiv="Content-Security-Policy" content="{{ resources.report_csp }}">
{{ super() }}
<style type="text/css">{{ resources.report_css }}</style>
{%- endblock html_head -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def notebook_to_html(notebook: str | Path, html_path: str | Path, title: str = "Analysis report") -> Path:
    """The executed notebook as a self-contained HTML report, code cells hidden.

    Nothing in it is fetched: figures are embedded, no script is loaded from a CDN, and its
    Content-Security-Policy (:data:`REPORT_CSP`) runs no script at all. Outputs are not passed
    through nbconvert's ``sanitize_html``, which in nbconvert 7.17 with bleach 6.4 shows every
    heading and paragraph as literal tags and drops table header rows: the labels in them are
    escaped where they enter HTML (:func:`table_html`, :func:`markdown_html`, the sentences above).

    Where the notebook says the study has no absolute ratings yet (:func:`no_ratings_html`), the
    cells tagged :data:`ABSOLUTE_TAG` (the absolute analysis' headings and tables) are left out.
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    notebook_node = nbformat.read(str(notebook), as_version=4)
    outputs = (str(output.get("data", {}).get("text/html", "")) for cell in notebook_node.cells
               if cell.cell_type == "code" for output in cell.get("outputs", []))
    if any(f'class="{NO_RATINGS_CLASS}"' in text for text in outputs):  # comparisons only: no empty sections
        notebook_node.cells = [cell for cell in notebook_node.cells
                               if ABSOLUTE_TAG not in cell.get("metadata", {}).get("tags", [])]
    exporter = HTMLExporter(template_name="lab", template_file="medprobe_report.html.j2",
                            extra_loaders=[jinja2.DictLoader({"medprobe_report.html.j2": REPORT_TEMPLATE})],
                            exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
                            exclude_anchor_links=True, embed_images=True, sanitize_html=False)
    resources = {"metadata": {"name": title}, "report_csp": REPORT_CSP, "report_css": REPORT_CSS}
    body, _ = exporter.from_notebook_node(notebook_node, resources=resources)
    html_path = Path(html_path)
    html_path.write_text(body, encoding="utf-8")
    return html_path


__all__ = ["ABSOLUTE_TAG", "COMPARISONS_HEADING", "COMPARISON_TABLES", "METRIC_TABLES", "NO_RATINGS_CLASS", "TABLES",
           "banner_html", "comparison_summary_html", "comparisons_html", "conclusions_html", "is_simulated", "load_comparisons", "load_ratings",
           "markdown_html", "markdown_safe", "metrics_html", "no_ratings_html", "notebook_to_html", "notices_html",
           "radiology_html", "reproduction_html", "select_raters", "simulated_note", "summary_html", "table_html",
           "write_comparison_report", "write_report"]
