"""Side-by-side comparisons: which of two presets do clinicians prefer, and how sure is that?

A comparison showing puts the four-image panels of two presets (generators) for one prompt side
by side, left and right randomised for each rater; per dimension (style, content) the rater
answers *left better*, *right better*, *both good* or *both poor*. The export
(:func:`ratings.io.comparison_table`) has one row per (rater, showing, dimension) with the
columns :data:`COMPARISON_COLUMNS`; :func:`prepare_comparisons` recodes each answer relative to
its pair (``a`` = ``preset_a`` better, ``b``, ``both_good``, ``both_poor``).

The estimand is, per dimension and preset pair, **which preset a prompt's raters prefer**. The
unit is the **prompt**: every prompt has its own true preference (one generator draws
"an x-ray of the lungs" better, the other "a poster about melanoma"), which all of its raters
share, so three raters' answers to one prompt are not three independent pieces of evidence.
Hence:

* :func:`sign_tests` (the declared test): each prompt goes to the preset its raters chose more
  often among their decisive answers (a draw, or no decisive answer, drops the prompt), and an
  exact two-sided binomial (sign) test asks whether the prompts split 50:50. Every preset pair x
  dimension is one declared family, adjusted by Holm (:func:`ratings.analysis.stats.adjusted_pvalues`);
  a pair's label (``holds``) comes from its adjusted p only.
* :func:`win_shares` and :func:`preset_shares`: counts and shares of wins of each preset,
  both good and both poor (kept apart), with 95% percentile-bootstrap intervals that resample
  prompts with all their answers (Wilson where a share is 0 or 1, or with fewer than
  :data:`ratings.analysis.stats.MIN_CLUSTERS` prompts).
* :func:`bradley_terry`: the Bradley-Terry model with Davidson's (1970) tie parameter (both good
  and both poor are ties), per dimension: each preset's log-strength against the reference
  preset (the first in alphabetical order, fixed at 0), with sandwich 95% CIs clustered by prompt
  (and by topic where there are at least 5 topics), and the win probabilities it implies
  (:func:`win_probabilities`).
* :func:`position_bias`: the share of decisive answers that chose the left side.
* :func:`choice_agreement`: Krippendorff's alpha (nominal) of the choices relative to the pair.
* :func:`style_heterogeneity`: does the preference differ between style groups (a preset that
  helps radiology more than histopathology)? Its own declared claim, one Wald test per dimension.

:func:`analyze_comparisons` runs them all; :func:`methods_text` says what was done in words a
reviewer can paste, and :func:`conclusions` gives one sentence per dimension.
"""

from __future__ import annotations

import itertools
import math

import krippendorff
import numpy as np
import pandas as pd
from scipy import stats as ss

from ..errors import AnalysisError
from .stats import CORRECTIONS, MIN_CLUSTERS, adjusted_pvalues, check_choice, percentile_ci

COMPARISON_COLUMNS = ["rater", "pair", "prompt_id", "text", "style", "style_group", "topic", "topic_group",
                      "detail", "preset_a", "preset_b", "left", "right", "dimension", "choice", "winner",
                      "nonsensical_left", "nonsensical_right", "comment", "seconds", "rated_at", "repeat"]
CHOICES = ("left", "right", "both_good", "both_poor")
TIES = ("both_good", "both_poor")
OUTCOMES = ("a", "b", "both_good", "both_poor")  # an answer relative to its pair
DIMENSION_ORDER = ("style", "content")
BY_LEVELS = ("style_group", "style")  # the breakdowns of the shares and the Bradley-Terry fits
N_BOOT = 2000
MAX_LOG_STRENGTH = 12.0  # |log-strength| beyond which a fit is taken to diverge (a preset always wins)
PREPARED_COLUMNS = ["rater", "pair", "prompt_id", "style", "style_group", "topic", "topic_group", "detail",
                    "preset_a", "preset_b", "left", "right", "dimension", "choice", "outcome", "repeat"]


# --- the table ----------------------------------------------------------------------------------

def check_comparisons(comparisons: pd.DataFrame) -> None:
    """:class:`~ratings.errors.AnalysisError` unless ``comparisons`` is a comparisons table that can be analysed.

    Checks the columns (:data:`COMPARISON_COLUMNS`), that there are rows, that every row shows two
    different presets with ``left`` and ``right`` the pair's two presets, that ``choice`` is one
    of :data:`CHOICES` (or missing), that ``winner`` agrees with ``choice``, and that at least two
    presets are compared. Each message says what is wrong, where (column, first row's pair id)
    and what to do.

    Examples
    --------
    >>> import pandas as pd
    >>> check_comparisons(pd.DataFrame({'rater': ['A']}))
    Traceback (most recent call last):
    ...
    ratings.errors.AnalysisError: the comparisons table has no column pair, prompt_id, text, ...
    """
    _checked(comparisons)


def _text(series: pd.Series) -> np.ndarray:
    """A column as an object array of str, None where missing (pd.NA, NaN, None)."""
    given = series.notna().to_numpy()
    values = series.to_numpy(dtype=object)
    out = np.full(len(values), None, dtype=object)
    out[given] = values[given] if pd.api.types.is_string_dtype(series) else [str(v) for v in values[given]]
    return out


def _checked(comparisons: pd.DataFrame) -> dict[str, np.ndarray]:
    """The columns the analysis reads, as arrays, after the checks of :func:`check_comparisons`."""
    if not isinstance(comparisons, pd.DataFrame):
        raise AnalysisError(f"the comparisons must be a DataFrame (ratings.io.comparison_table), not "
                            f"{type(comparisons).__name__}")
    comparisons = _bare(comparisons)
    missing = [c for c in COMPARISON_COLUMNS if c not in comparisons.columns]
    if missing:
        raise AnalysisError(f"the comparisons table has no column {', '.join(missing)}; pass the export of "
                            "ratings.io.comparison_table(study) (or a CSV of it), whose columns are "
                            f"{', '.join(COMPARISON_COLUMNS)}")
    if comparisons.empty:
        raise AnalysisError("there are no side-by-side comparisons to analyse: the table has no rows (no rater "
                            "has answered a comparison yet); build comparisons and let raters answer them first")
    col = {c: _text(comparisons[c]) for c in ("rater", "pair", "preset_a", "preset_b", "left", "right",
                                             "dimension", "choice", "winner")}

    def where(mask, with_dimension=False):
        n = int(np.argmax(mask))
        return (f"comparison {col['pair'][n]} (rater {col['rater'][n]}"
                + (f", {col['dimension'][n]}" if with_dimension else "") + ")")

    a, b = col["preset_a"], col["preset_b"]
    same = a == b
    if same.any():
        raise AnalysisError(f"{where(same)} shows preset {a[np.argmax(same)]!r} against itself (and "
                            f"{int(same.sum()) - 1} more rows): a comparison needs two different presets; leave "
                            "these rows out or fix the export")
    left, right = col["left"], col["right"]
    sides = ((left == a) & (right == b)) | ((left == b) & (right == a))
    if not sides.all():
        n = int(np.argmax(~sides))
        raise AnalysisError(f"{where(~sides)}: left {left[n]!r} and right {right[n]!r} are not the pair's presets "
                            f"{a[n]!r} and {b[n]!r} ({int((~sides).sum())} such rows); fix the export")
    choice = col["choice"]
    bad = np.array([c is not None and c not in CHOICES for c in choice])
    if bad.any():
        raise AnalysisError(f"{where(bad, True)}: choice {choice[np.argmax(bad)]!r} is not one of "
                            f"{', '.join(CHOICES)} (or empty where not answered); {int(bad.sum())} such rows")
    chosen = np.where(choice == "left", left, np.where(choice == "right", right, choice))
    winner = col["winner"]
    wrong = np.array([w is not None and c is not None and w != c for w, c in zip(winner, chosen, strict=True)])
    if wrong.any():
        n = int(np.argmax(wrong))
        raise AnalysisError(f"{where(wrong, True)}: winner {winner[n]!r} disagrees with choice {choice[n]!r} (left "
                            f"{left[n]!r}, right {right[n]!r}) in {int(wrong.sum())} rows; the analysis reads choice, "
                            "left and right: fix the export")
    col["chosen"] = chosen
    col["repeat"] = pd.to_numeric(comparisons["repeat"]).fillna(0).astype(int).to_numpy()
    return col


def _bare(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without its attrs: pandas deep-copies attrs (a simulation's settings) on every operation."""
    bare = frame.copy(deep=False)
    bare.attrs = {}
    return bare


def prepare_comparisons(comparisons: pd.DataFrame, repeats: bool = False) -> pd.DataFrame:
    """The comparisons table checked and recoded relative to each pair: one row per answer.

    Parameters
    ----------
    comparisons : DataFrame
        The export (:data:`COMPARISON_COLUMNS`), as :func:`ratings.io.comparison_table` writes it.
    repeats : bool
        False (default): first showings only (``repeat == 0``), what every analysis uses. True:
        every showing (for intra-rater agreement).

    Returns
    -------
    DataFrame
        :data:`PREPARED_COLUMNS`: ``outcome`` is ``a`` (preset_a chosen), ``b``, ``both_good``,
        ``both_poor`` or None (not answered); ``preset_a`` sorts before ``preset_b`` (a row given
        the other way round is turned round); styles keep the catalog order.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_comparisons
    >>> table = simulate_comparisons('oncology', raters=['A'], seed=0)
    >>> data = prepare_comparisons(table)
    >>> len(table), len(data), sorted(data['outcome'].dropna().unique())
    (544, 544, ['a', 'b', 'both_good', 'both_poor'])
    >>> data[['preset_a', 'preset_b']].drop_duplicates().values.tolist()
    [['glide-cfg', 'glide-clip']]
    """
    col = _checked(comparisons)
    simulated = comparisons.attrs.get("simulated")
    keep = np.ones(len(comparisons), bool) if repeats else col["repeat"] == 0
    if not keep.any():
        raise AnalysisError("every comparison row is a repeated showing (repeat = 1): the analysis uses first "
                            "showings (repeat = 0); export them too")
    col = {k: v[keep] for k, v in col.items()}
    rows = _bare(comparisons)[keep]
    a, b = col["preset_a"], col["preset_b"]
    swap = a > b
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    chosen = col["chosen"]
    outcome = np.where(chosen == a, "a", np.where(chosen == b, "b", chosen)).astype(object)
    out = pd.DataFrame({
        "rater": col["rater"], "pair": col["pair"], "prompt_id": _text(rows["prompt_id"]),
        "style": _text(rows["style"]), "style_group": _text(rows["style_group"]), "topic": _text(rows["topic"]),
        "topic_group": _text(rows["topic_group"]), "detail": _text(rows["detail"]), "preset_a": a, "preset_b": b,
        "left": col["left"], "right": col["right"], "dimension": col["dimension"], "choice": col["choice"],
        "outcome": outcome, "repeat": col["repeat"]})
    from .plots import order_styles

    styles = out["style"].astype(str)
    out["style"] = pd.Categorical(styles, categories=order_styles(pd.unique(styles)))
    # style groups in the order of their first style (microscopy, radiology, other for oncology)
    groups = out[["style", "style_group"]].drop_duplicates().sort_values("style")["style_group"]
    out["style_group"] = pd.Categorical(out["style_group"], categories=list(dict.fromkeys(groups)))
    out.attrs = {"simulated": simulated} if simulated else {}
    return out


def _prepared(comparisons: pd.DataFrame, repeats: bool = False) -> pd.DataFrame:
    """``comparisons`` prepared, unless it already is (has ``outcome``)."""
    if isinstance(comparisons, pd.DataFrame) and "outcome" in comparisons and not repeats:
        return comparisons
    return prepare_comparisons(comparisons, repeats=repeats)


def _dimensions(data: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(data["dimension"]))
    return [d for d in DIMENSION_ORDER if d in present] + sorted(d for d in present if d not in DIMENSION_ORDER)


def _pairs(data: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted(set(zip(data["preset_a"], data["preset_b"], strict=True)))


def _presets(data: pd.DataFrame) -> list[str]:
    return sorted(set(data["preset_a"]) | set(data["preset_b"]))


def _need_decisive(data: pd.DataFrame, what: str = "a preference") -> None:
    """:class:`AnalysisError` unless some first showing says which side is better."""
    if data["outcome"].isin(["a", "b"]).any():
        return
    answered = int(data["outcome"].notna().sum())
    said = (f"all {answered} answered comparisons (first showings) say both good or both poor, so {what} cannot "
            "be estimated (the shares of ties are in win_shares())" if answered else
            "no comparison of the first showings has a choice yet")
    raise AnalysisError(f"no decisive answers: {said}. Analyse again when raters have said which side is better.")


# --- shares ---------------------------------------------------------------------------------------

def _levels(data: pd.DataFrame, by) -> list[tuple[str, str, pd.DataFrame]]:
    """(by, level, rows) of the breakdowns: "all" first, then each level of each ``by`` column."""
    out = [("all", "all", data)]
    for column in ([by] if isinstance(by, str) else list(by or ())):
        if column not in data:
            raise AnalysisError(f"the comparisons have no column {column!r} to break the results down by; "
                                f"use one of {', '.join(BY_LEVELS)}")
        keys = data[column]
        levels = (list(keys.cat.categories[keys.cat.categories.isin(keys.dropna().unique())])
                  if isinstance(keys.dtype, pd.CategoricalDtype) else list(dict.fromkeys(keys.dropna())))
        out += [(column, str(level), data[keys == level]) for level in levels]
    return out


def _boot_weights(n_clusters: int, n_boot: int, rng: np.random.Generator) -> np.ndarray | None:
    """How often each cluster is drawn in each of ``n_boot`` resamples (n_boot x n_clusters)."""
    if n_boot <= 0 or n_clusters == 0:
        return None
    return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_boot).astype(float)


def _share_ci(k: int, n: int, boot_k, boot_n, n_clusters: int, ci: float) -> tuple[float, float, float, str]:
    """share k / n with its prompt-bootstrap percentile interval; Wilson where that cannot work."""
    if n == 0:
        return np.nan, np.nan, np.nan, "no answers"
    share = k / n
    if k in (0, n) or n_clusters < MIN_CLUSTERS or boot_k is None:
        from statsmodels.stats.proportion import proportion_confint

        low, high = proportion_confint(k, n, alpha=1 - ci, method="wilson")
        low, high = (min(low, share) if k else 0.0), (max(high, share) if k < n else 1.0)
        why = ("every answer on one side" if k in (0, n) else f"{n_clusters} prompts, a clustered interval "
               f"needs at least {MIN_CLUSTERS}" if n_clusters < MIN_CLUSTERS else "no resamples (n_boot = 0)")
        return share, float(low), float(high), f"Wilson interval (not clustered): {why}"
    with np.errstate(invalid="ignore", divide="ignore"):
        low, high = percentile_ci(np.asarray(boot_k) / np.asarray(boot_n), ci)
    return share, low, high, ""


def _prompt_counts(rows: pd.DataFrame, columns: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per prompt, the sums of each indicator column (for the prompt bootstrap)."""
    codes, prompts = pd.factorize(rows["prompt_id"])
    return prompts, {name: np.bincount(codes, weights=values.astype(float), minlength=len(prompts))
                     for name, values in columns.items()}


def win_shares(comparisons: pd.DataFrame, by=BY_LEVELS, n_boot: int = N_BOOT, seed: int = 0,
               ci: float = 0.95) -> pd.DataFrame:
    """Per dimension, preset pair (and level of ``by``): counts and shares of each outcome, with CIs.

    Of the answered first showings of a pair: ``a_wins`` (preset_a chosen), ``b_wins``,
    ``both_good`` and ``both_poor`` (kept apart), each as a share of the answers, and
    ``share_a_decisive``, preset_a's share of the decisive answers (those that named a better
    side; 0.5 is no preference). Intervals are 95% percentile-bootstrap intervals resampling
    prompts with all their answers (a prompt's raters share its preference), or Wilson
    intervals where a share is 0 or 1 or there are fewer than ``stats.MIN_CLUSTERS`` prompts
    (``note`` says so). Descriptive: the test is :func:`sign_tests`.

    Parameters
    ----------
    comparisons : DataFrame
        The comparisons table (:data:`COMPARISON_COLUMNS`) or :func:`prepare_comparisons`' output.
    by : str or sequence of str
        Breakdowns beside the overall rows (``by = "all"``): style_group and style by default.
    n_boot : int
        Bootstrap resamples (0: Wilson intervals only).
    seed : int
        Seed of the resampling.
    ci : float
        Confidence level.

    Returns
    -------
    DataFrame
        dimension, by, level, preset_a, preset_b, n (answers), n_prompts, a_wins, b_wins,
        both_good, both_poor, and for each of share_a, share_b, share_both_good,
        share_both_poor, share_a_decisive its value with ``_low`` and ``_high``, note.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_comparisons
    >>> table = simulate_comparisons('oncology', preference=0.7, seed=1)
    >>> shares = win_shares(table, by=None, n_boot=200)
    >>> print(shares[['dimension', 'preset_a', 'preset_b', 'n', 'a_wins', 'b_wins', 'both_good',
    ...               'both_poor']].to_string(index=False))
    dimension  preset_a   preset_b   n  a_wins  b_wins  both_good  both_poor
        style glide-cfg glide-clip 816     162     446        111         97
      content glide-cfg glide-clip 816     174     427        122         93
    >>> print(shares[['share_a_decisive', 'share_a_decisive_low', 'share_a_decisive_high']].round(3).to_string(index=False))
     share_a_decisive  share_a_decisive_low  share_a_decisive_high
                0.266                 0.229                  0.310
                0.290                 0.247                  0.333
    """
    data = _prepared(comparisons)
    rng = np.random.default_rng(seed)
    rows = []
    for dimension in _dimensions(data):
        mine = data[(data["dimension"] == dimension) & data["outcome"].notna()]
        for by_name, level, part in _levels(mine, by):
            for a, b in _pairs(mine):
                rows.append(_pair_shares(part[(part["preset_a"] == a) & (part["preset_b"] == b)], n_boot, rng, ci)
                            | {"dimension": dimension, "by": by_name, "level": level, "preset_a": a, "preset_b": b})
    columns = ["dimension", "by", "level", "preset_a", "preset_b", "n", "n_prompts", "a_wins", "b_wins",
               "both_good", "both_poor"]
    for name in ("share_a", "share_b", "share_both_good", "share_both_poor", "share_a_decisive"):
        columns += [name, f"{name}_low", f"{name}_high"]
    return pd.DataFrame(rows, columns=columns + ["note"])


def _pair_shares(rows: pd.DataFrame, n_boot: int, rng, ci: float) -> dict:
    outcome = rows["outcome"].to_numpy(object)
    indicators = {name: outcome == code for name, code in
                  (("a_wins", "a"), ("b_wins", "b"), ("both_good", "both_good"), ("both_poor", "both_poor"))}
    indicators["n"] = np.ones(len(rows), bool)
    prompts, sums = _prompt_counts(rows, indicators)
    weights = _boot_weights(len(prompts), n_boot, rng)
    boot = {k: (weights @ v if weights is not None else None) for k, v in sums.items()}
    out = {k: int(v.sum()) for k, v in sums.items()}
    out["n_prompts"] = len(prompts)
    notes = []
    for name, key in (("share_a", "a_wins"), ("share_b", "b_wins"), ("share_both_good", "both_good"),
                      ("share_both_poor", "both_poor")):
        share, low, high, note = _share_ci(out[key], out["n"], boot[key], boot["n"], len(prompts), ci)
        out.update({name: share, f"{name}_low": low, f"{name}_high": high})
        notes.append(note)
    decisive = out["a_wins"] + out["b_wins"]
    boot_decisive = boot["a_wins"] + boot["b_wins"] if weights is not None else None
    share, low, high, note = _share_ci(out["a_wins"], decisive, boot["a_wins"], boot_decisive, len(prompts), ci)
    if decisive == 0:
        note = "no decisive answers"
    out.update({"share_a_decisive": share, "share_a_decisive_low": low, "share_a_decisive_high": high})
    notes.append(note)
    out["note"] = "; ".join(dict.fromkeys(n for n in notes if n)) or None
    return out


def preset_shares(comparisons: pd.DataFrame, by=BY_LEVELS, n_boot: int = N_BOOT, seed: int = 0,
                  ci: float = 0.95) -> pd.DataFrame:
    """Per dimension and preset (and level of ``by``): how often the preset won its comparisons.

    Over every answered first showing in which the preset took part (against any other preset):
    ``wins``, ``losses``, ``both_good``, ``both_poor``; ``share_won`` of the answers and
    ``share_won_decisive`` of the decisive ones (0.5: as often better as worse), each with the
    prompt-bootstrap 95% interval of :func:`win_shares` (Wilson where that cannot work). With two
    presets, the two presets' rows mirror each other. This is the table of the report's figure
    (:func:`ratings.analysis.plots.comparison_wins`).

    Returns
    -------
    DataFrame
        dimension, by, level, preset, n, n_prompts, wins, losses, both_good, both_poor, share_won,
        share_won_low, share_won_high, share_won_decisive, share_won_decisive_low,
        share_won_decisive_high, share_tied, note.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_comparisons
    >>> table = simulate_comparisons('oncology', preference=0.7, seed=1)
    >>> wins = preset_shares(table, by=None, n_boot=200)
    >>> print(wins[['dimension', 'preset', 'wins', 'losses', 'share_won_decisive']].round(3).to_string(index=False))
    dimension     preset  wins  losses  share_won_decisive
        style  glide-cfg   162     446               0.266
        style glide-clip   446     162               0.734
      content  glide-cfg   174     427               0.290
      content glide-clip   427     174               0.710
    """
    data = _prepared(comparisons)
    rng = np.random.default_rng(seed)
    rows = []
    for dimension in _dimensions(data):
        mine = data[(data["dimension"] == dimension) & data["outcome"].notna()]
        presets = _presets(mine)
        for by_name, level, part in _levels(mine, by):
            outcome = part["outcome"].to_numpy(object)
            for preset in presets:
                is_a = (part["preset_a"] == preset).to_numpy()
                is_b = (part["preset_b"] == preset).to_numpy()
                rows_of = part[is_a | is_b]
                keep = is_a | is_b
                won = ((outcome == "a") & is_a) | ((outcome == "b") & is_b)
                lost = ((outcome == "b") & is_a) | ((outcome == "a") & is_b)
                indicators = {"wins": won[keep], "losses": lost[keep], "both_good": (outcome == "both_good")[keep],
                              "both_poor": (outcome == "both_poor")[keep], "n": np.ones(int(keep.sum()), bool)}
                prompts, sums = _prompt_counts(rows_of, indicators)
                weights = _boot_weights(len(prompts), n_boot, rng)
                boot = {k: (weights @ v if weights is not None else None) for k, v in sums.items()}
                row = {k: int(v.sum()) for k, v in sums.items()}
                share, low, high, note = _share_ci(row["wins"], row["n"], boot["wins"], boot["n"], len(prompts), ci)
                decisive = row["wins"] + row["losses"]
                bd = boot["wins"] + boot["losses"] if weights is not None else None
                dshare, dlow, dhigh, dnote = _share_ci(row["wins"], decisive, boot["wins"], bd, len(prompts), ci)
                notes = [note, "no decisive answers" if decisive == 0 else dnote]
                rows.append({"dimension": dimension, "by": by_name, "level": level, "preset": preset, **row,
                             "n_prompts": len(prompts), "share_won": share, "share_won_low": low,
                             "share_won_high": high, "share_won_decisive": dshare, "share_won_decisive_low": dlow,
                             "share_won_decisive_high": dhigh,
                             "share_tied": (row["both_good"] + row["both_poor"]) / row["n"] if row["n"] else np.nan,
                             "note": "; ".join(dict.fromkeys(n for n in notes if n)) or None})
    return pd.DataFrame(rows, columns=["dimension", "by", "level", "preset", "n", "n_prompts", "wins", "losses",
                                       "both_good", "both_poor", "share_won", "share_won_low", "share_won_high",
                                       "share_won_decisive", "share_won_decisive_low", "share_won_decisive_high",
                                       "share_tied", "note"])


# --- the declared test ----------------------------------------------------------------------------

def prompt_votes(rows: pd.DataFrame) -> pd.Series:
    """Per prompt, preset_a's decisive answers minus preset_b's (one pair, one dimension).

    A prompt with a positive margin goes to preset_a in :func:`sign_tests`, a negative one to
    preset_b; zero (a draw, or no decisive answer) drops it. Rows are prepared answers
    (:func:`prepare_comparisons`) of one pair and dimension.

    Examples
    --------
    >>> import pandas as pd
    >>> rows = pd.DataFrame({'prompt_id': ['p1', 'p1', 'p1', 'p2', 'p2', 'p3'],
    ...                      'outcome': ['a', 'a', 'b', 'b', 'a', 'both_poor']})
    >>> prompt_votes(rows).to_dict()
    {'p1': 1, 'p2': 0, 'p3': 0}
    """
    outcome = rows["outcome"]
    margin = (outcome == "a").astype(int) - (outcome == "b").astype(int)
    return margin.groupby(rows["prompt_id"].to_numpy(), sort=False).sum().astype(int)


def family_words(n_pairs: int, n_dimensions: int) -> str:
    """The declared family of the sign tests, in words.

    Examples
    --------
    >>> family_words(3, 2)
    '6 tests: every preset pair x dimension (3 preset pairs x 2 dimensions)'
    """
    plural = lambda n, w: f"{n} {w}{'s' if n != 1 else ''}"  # noqa: E731
    return (f"{plural(n_pairs * n_dimensions, 'test')}: every preset pair x dimension "
            f"({plural(n_pairs, 'preset pair')} x {plural(n_dimensions, 'dimension')})")


SIGN_COLUMNS = ["dimension", "preset_a", "preset_b", "unit", "test", "n_prompts", "n_decisive_prompts",
                "prompts_a", "prompts_b", "prompts_drawn", "share_a", "share_a_low", "share_a_high",
                "n_decisive_answers", "answers_a", "answers_b", "p", "p_adj", "correction", "family", "holds",
                "holds_by", "preferred", "topics_a", "topics_b", "p_topic", "note"]


def sign_tests(comparisons: pd.DataFrame, alpha: float = 0.05, correction: str = "holm",
               ci: float = 0.95) -> pd.DataFrame:
    """The declared test: per dimension and preset pair, do a pair's prompts split 50:50?

    The unit is the prompt. Each prompt goes to the preset its raters chose more often among
    their decisive answers (first showings; both good and both poor are not decisive); a prompt
    with as many answers each way, or none decisive, is a draw and drops out. Under the null
    hypothesis that the presets are equally preferred (every prompt's own preference drawn
    around zero and shared by its raters, prompts independent, left and right randomised),
    each remaining prompt goes either way with probability 1/2, so the count of prompts won by
    preset_a is Binomial(n, 1/2): the exact two-sided binomial (sign) test
    (:func:`scipy.stats.binomtest`) gives p, and its Clopper-Pearson interval the CI of
    ``share_a``, preset_a's share of the decisive prompts. Testing single answers instead would
    treat the raters of one prompt as independent and reject far too often when prompts differ.

    Every preset pair x dimension is one declared family, adjusted by ``correction`` (Holm by
    default, :func:`ratings.analysis.stats.adjusted_pvalues`); ``holds`` (the presets differ)
    comes from ``p_adj < alpha`` only, and ``preferred`` names the preset with more prompts
    where it holds.

    A check beside it, not part of the family: where topics themselves carry a preference (one
    preset better at a whole topic, a topic x preset effect), a topic's prompts lean together
    and the prompt-level test rejects too often (12.5% at alpha 0.05 with a topic-preference SD
    of 0.5 logits, in simulation). ``p_topic`` is the same exact sign test with topics as the
    unit (each topic goes to the preset that won more of its prompts): valid then, with far
    fewer units. A verdict whose ``p_topic`` is large rests on a few topics.

    Parameters
    ----------
    comparisons : DataFrame
        The comparisons table or :func:`prepare_comparisons`' output.
    alpha : float
        Level of the family.
    correction : {"holm", "fdr_bh", "bonferroni", "none"}
        The family's adjustment.
    ci : float
        Confidence level of ``share_a``'s interval.

    Returns
    -------
    DataFrame
        :data:`SIGN_COLUMNS`, one row per dimension and preset pair.

    References
    ----------
    Dixon, W. J., & Mood, A. M. (1946). The statistical sign test. JASA 41(236), 557-566.
    Holm, S. (1979). A simple sequentially rejective multiple test procedure. Scand. J. Stat. 6, 65-70.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_comparisons
    >>> table = simulate_comparisons('oncology', preference=0.7, seed=1)
    >>> out = sign_tests(table)
    >>> print(out[['dimension', 'prompts_a', 'prompts_b', 'prompts_drawn', 'p_adj', 'preferred']].to_string(index=False))
    dimension  prompts_a  prompts_b  prompts_drawn        p_adj  preferred
        style         38        193             41 7.196330e-26 glide-clip
      content         46        178             48 1.623655e-19 glide-clip
    >>> out['family'].iloc[0]
    '2 tests: every preset pair x dimension (1 preset pair x 2 dimensions)'
    """
    check_choice("correction", correction, CORRECTIONS)
    if not 0 < alpha < 1:
        raise AnalysisError(f"alpha must lie between 0 and 1, not {alpha}")
    data = _prepared(comparisons)
    _need_decisive(data)
    dimensions, pairs = _dimensions(data), _pairs(data)
    outcome = data["outcome"].to_numpy(object)
    vote = (outcome == "a").astype(np.int64) - (outcome == "b").astype(np.int64)
    # one pass: per (dimension, pair, prompt) the margin of preset_a's decisive answers over preset_b's
    dim_code = pd.Index(dimensions).get_indexer(data["dimension"].to_numpy(object))
    pair_code = pd.MultiIndex.from_tuples(pairs).get_indexer(
        pd.MultiIndex.from_arrays([data["preset_a"].to_numpy(object), data["preset_b"].to_numpy(object)]))
    prompt_code, prompts = pd.factorize(data["prompt_id"].to_numpy(object))
    topic_of_prompt = pd.Series(data["topic"].to_numpy(object)).groupby(prompt_code).first().reindex(
        range(len(prompts))).to_numpy(object)
    topic_code, topics = pd.factorize(topic_of_prompt)
    test_code = dim_code * len(pairs) + pair_code
    cell = test_code * len(prompts) + prompt_code
    size = len(dimensions) * len(pairs)
    margin = np.bincount(cell, weights=vote, minlength=size * len(prompts)).reshape(size, len(prompts))
    shown = np.bincount(cell, minlength=size * len(prompts)).reshape(size, len(prompts)) > 0
    answers_of_a = np.bincount(test_code, weights=vote > 0, minlength=size)
    answers_of_b = np.bincount(test_code, weights=vote < 0, minlength=size)
    rows = []
    for d, dimension in enumerate(dimensions):
        for q, (a, b) in enumerate(pairs):
            t = d * len(pairs) + q
            votes = margin[t][shown[t]]
            wins_a, wins_b = int((votes > 0).sum()), int((votes < 0).sum())
            n = wins_a + wins_b
            answers_a, answers_b = int(answers_of_a[t]), int(answers_of_b[t])
            # the check against topic-level preferences: each topic goes to the preset that won more of its prompts
            topic_margin = np.bincount(topic_code[shown[t]], weights=np.sign(margin[t][shown[t]]),
                                       minlength=len(topics))
            topics_a, topics_b = int((topic_margin > 0).sum()), int((topic_margin < 0).sum())
            row = {"dimension": dimension, "preset_a": a, "preset_b": b, "unit": "prompt",
                   "test": "exact binomial sign test on prompts", "n_prompts": len(votes), "n_decisive_prompts": n,
                   "prompts_a": wins_a, "prompts_b": wins_b, "prompts_drawn": len(votes) - n,
                   "n_decisive_answers": answers_a + answers_b, "answers_a": answers_a, "answers_b": answers_b,
                   "p": np.nan, "share_a": np.nan, "share_a_low": np.nan, "share_a_high": np.nan,
                   "topics_a": topics_a, "topics_b": topics_b,
                   "p_topic": (float(ss.binomtest(topics_a, topics_a + topics_b).pvalue) if topics_a + topics_b
                               else np.nan), "note": None}
            if n:
                result = ss.binomtest(wins_a, n, 0.5, alternative="two-sided")
                interval = result.proportion_ci(confidence_level=ci, method="exact")
                row.update(p=float(result.pvalue), share_a=wins_a / n, share_a_low=float(interval.low),
                           share_a_high=float(interval.high))
            else:
                row["note"] = "no prompt with a decisive majority: not tested"
            rows.append(row)
    out = pd.DataFrame(rows)
    tested = out["p"].notna()
    family = family_words(len(pairs), len(dimensions))
    if (~tested).any():
        family += f"; {int(tested.sum())} tested (the others had no decisive prompt)"
    out["p_adj"] = np.nan
    out.loc[tested, "p_adj"] = adjusted_pvalues(out.loc[tested, "p"].to_numpy(float), correction)
    out["correction"], out["family"] = correction, family
    out["holds"] = out["p_adj"] < alpha
    out["holds_by"] = f"p_adj < {alpha:g} ({correction}, {family.split(':')[0]})"
    out["preferred"] = np.where(out["holds"], np.where(out["share_a"] > 0.5, out["preset_a"], out["preset_b"]), None)
    return out[SIGN_COLUMNS]


# --- Bradley-Terry with Davidson's ties -----------------------------------------------------------

def davidson_fit(i, j, outcome, n_presets: int, ties: bool | None = None, max_iter: int = 100) -> dict:
    """Maximum-likelihood Bradley-Terry-Davidson fit by Newton's method (analytic score and information).

    With strengths pi = exp(theta) (theta_0 = 0: preset 0 is the reference) and tie parameter
    nu = exp(log_nu), an answer on presets i and j is i better with probability
    pi_i / D, j better with pi_j / D and a tie with nu sqrt(pi_i pi_j) / D, where
    D = pi_i + pi_j + nu sqrt(pi_i pi_j) (Davidson 1970). ``ties=False`` (the default where no
    answer ties) is the plain Bradley-Terry model (nu = 0). The log-likelihood is concave; the
    observed information equals the expected one.

    Parameters
    ----------
    i, j : array of int
        The two presets of each answer (indices 0 .. n_presets - 1).
    outcome : array of int
        0: i better, 1: j better, 2: tie.
    n_presets : int
        Number of presets.
    ties : bool, optional
        Fit the tie parameter (default: where any answer ties).
    max_iter : int
        Newton iterations at most.

    Returns
    -------
    dict
        ``params`` (theta_1 .. theta_{k-1}, then log_nu where fitted), ``information`` (the
        negative Hessian of the log-likelihood), ``scores`` (one row per answer: its score
        contribution), ``loglik``, ``converged``, ``ties``, ``estimable`` and ``note``.

    References
    ----------
    Bradley, R. A., & Terry, M. E. (1952). Rank analysis of incomplete block designs: I.
    Biometrika 39, 324-345. Davidson, R. R. (1970). On extending the Bradley-Terry model to
    accommodate ties in paired comparison experiments. JASA 65(329), 317-328.

    Examples
    --------
    Two presets: the closed form is theta = log(W / L) and nu = T / sqrt(W L).

    >>> import numpy as np
    >>> outcome = np.array([0] * 30 + [1] * 20 + [2] * 10)
    >>> fit = davidson_fit(np.zeros(60, int), np.ones(60, int), outcome, 2)
    >>> # theta_1 is preset 1 (j) against the reference preset 0: log(L / W)
    >>> round(float(fit['params'][0]), 6), round(float(np.log(20 / 30)), 6)
    (-0.405465, -0.405465)
    >>> round(float(np.exp(fit['params'][1])), 6), round(float(10 / np.sqrt(30 * 20)), 6)
    (0.408248, 0.408248)
    """
    i, j, outcome = (np.asarray(x, dtype=np.int64) for x in (i, j, outcome))
    ties = bool((outcome == 2).any()) if ties is None else bool(ties)
    n = len(outcome)
    k_free = n_presets - 1
    x = np.zeros((n, n_presets))
    x[np.arange(n), i] += 1.0
    x[np.arange(n), j] -= 1.0
    x = x[:, 1:]
    y_i, y_j, y_t = (outcome == 0).astype(float), (outcome == 1).astype(float), (outcome == 2).astype(float)
    p_count = k_free + ties
    note = (_existence(i, j, outcome, n_presets) if (outcome != 2).any() else
            "not estimable: no decisive answer (only ties), so the strengths and nu are not identified")
    params = np.zeros(p_count)
    if ties:
        w, lo, t = y_i.sum(), y_j.sum(), y_t.sum()
        params[-1] = math.log(max(t, 0.5) / math.sqrt(max(w, 0.5) * max(lo, 0.5)))

    def evaluate(theta):
        d = x @ theta[:k_free]
        half_a, half_b = np.exp(np.clip(d / 2, -50, 50)), np.exp(np.clip(-d / 2, -50, 50))
        nu = math.exp(theta[-1]) if ties else 0.0
        denominator = half_a + half_b + nu
        loglik = float(np.sum(y_i * d / 2 - y_j * d / 2 - np.log(denominator))
                       + (np.sum(y_t) * theta[-1] if ties else 0.0))
        pa, pb, pt = half_a / denominator, half_b / denominator, nu / denominator
        s_d = (y_i - y_j) / 2 - (pa - pb) / 2
        scores = x * s_d[:, None]
        h_dd = (pa + pb) / 4 - (pa - pb) ** 2 / 4
        information = np.zeros((p_count, p_count))
        information[:k_free, :k_free] = x.T @ (x * h_dd[:, None])
        if ties:
            scores = np.column_stack([scores, y_t - pt])
            h_dg = -(pa - pb) * pt / 2
            information[:k_free, -1] = information[-1, :k_free] = x.T @ h_dg
            information[-1, -1] = np.sum(pt - pt ** 2)
        return loglik, scores, information

    loglik, scores, information = evaluate(params)
    converged = False
    for _ in range(max_iter):
        gradient = scores.sum(axis=0)
        try:
            step = np.linalg.solve(information, gradient)
        except np.linalg.LinAlgError:
            break
        size = 1.0
        while size > 1e-6:
            trial = params + size * step
            new = evaluate(trial)
            if new[0] >= loglik - 1e-12:
                break
            size /= 2
        params, (loglik, scores, information) = trial, new
        if np.max(np.abs(size * step)) < 1e-10 or np.max(np.abs(gradient)) < 1e-10:
            converged = True
            break
        if np.max(np.abs(params[:k_free])) > 2 * MAX_LOG_STRENGTH:
            break
    estimable = note is None and converged and np.max(np.abs(params[:k_free]), initial=0.0) < MAX_LOG_STRENGTH
    if note is None and not estimable:
        note = "the fit did not converge to finite strengths"
    return {"params": params, "information": information, "scores": scores, "loglik": loglik,
            "converged": converged, "ties": ties, "estimable": estimable, "note": note, "n": n}


def _existence(i, j, outcome, k) -> str | None:
    """Why the strengths have no finite maximum (a group of presets never beaten by the rest), or None.

    Finite strengths need every preset to reach every other through "beat or tied" answers
    (Hunter 2004's condition, ties counting both ways)."""
    reach = np.eye(k, dtype=bool)
    beat_or_tied = (outcome == 0) | (outcome == 2)
    reach[i[beat_or_tied], j[beat_or_tied]] = True
    lost_or_tied = (outcome == 1) | (outcome == 2)
    reach[j[lost_or_tied], i[lost_or_tied]] = True
    for _ in range(k):
        reach = reach | ((reach.astype(int) @ reach.astype(int)) > 0)
    if reach.all():
        return None
    return ("not estimable: some preset was never chosen over (or tied with) another, so its strength is not "
            "finite (every answer on one side)")


def cluster_covariance(fit: dict, clusters) -> tuple[np.ndarray, int]:
    """The cluster-robust (sandwich) covariance of a :func:`davidson_fit`, and the number of clusters.

    I^-1 (sum over clusters of the summed score contributions' outer products) I^-1, times
    G / (G - 1) * (N - 1) / (N - K), the small-sample factor statsmodels' ``cov_type="cluster"``
    uses (G clusters, N answers, K parameters).

    Examples
    --------
    >>> import numpy as np
    >>> outcome = np.array([0, 0, 1, 2, 0, 1, 0, 0, 2, 1])
    >>> fit = davidson_fit(np.zeros(10, int), np.ones(10, int), outcome, 2)
    >>> cov, g = cluster_covariance(fit, np.repeat(np.arange(5), 2))
    >>> cov.shape, g
    ((2, 2), 5)
    """
    codes = pd.factorize(np.asarray(clusters))[0]
    g = int(codes.max()) + 1 if len(codes) else 0
    scores = fit["scores"]
    n, k = scores.shape
    sums = np.zeros((g, k))
    np.add.at(sums, codes, scores)
    bread = np.linalg.pinv(fit["information"])
    factor = g / (g - 1) * (n - 1) / (n - k) if g > 1 and n > k else np.nan
    return factor * bread @ (sums.T @ sums) @ bread, g


def _pair_data(rows: pd.DataFrame, presets: list[str]):
    index = {p: n for n, p in enumerate(presets)}
    answered = rows[rows["outcome"].notna()]
    i = answered["preset_a"].map(index).to_numpy(np.int64)
    j = answered["preset_b"].map(index).to_numpy(np.int64)
    outcome = answered["outcome"].map({"a": 0, "b": 1, "both_good": 2, "both_poor": 2}).to_numpy(np.int64)
    return answered, i, j, outcome


def _t(df: int, ci: float) -> float:
    return float(ss.t.ppf(0.5 + ci / 2, df)) if df and df > 0 else np.nan


BT_COLUMNS = ["dimension", "by", "level", "term", "preset", "estimate", "se_model", "se_prompt", "ci_low", "ci_high",
              "se_topic", "ci_low_topic", "ci_high_topic", "reference", "n_answers", "n_ties", "n_prompts",
              "n_topics", "note"]
PROBABILITY_COLUMNS = ["dimension", "by", "level", "preset_a", "preset_b", "log_odds", "se_prompt",
                       "p_a_decisive", "ci_low", "ci_high", "ci_low_topic", "ci_high_topic", "p_a_wins", "p_b_wins",
                       "p_tie", "p_wald", "p_wald_topic", "n_answers", "note"]


def _bt_one(rows: pd.DataFrame, presets: list[str], ci: float) -> dict:
    """One Davidson fit with its model-based, prompt- and topic-clustered covariances."""
    answered, i, j, outcome = _pair_data(rows, presets)
    fit = davidson_fit(i, j, outcome, len(presets))
    k = len(fit["params"])
    out = {"fit": fit, "answered": answered, "n_prompts": answered["prompt_id"].nunique(),
           "n_topics": answered["topic"].nunique(), "cov_model": np.full((k, k), np.nan),
           "cov_prompt": np.full((k, k), np.nan), "cov_topic": None, "g_prompt": 0, "g_topic": 0}
    if not fit["estimable"]:
        return out
    out["cov_model"] = np.linalg.pinv(fit["information"])
    out["cov_prompt"], out["g_prompt"] = cluster_covariance(fit, answered["prompt_id"].to_numpy())
    if out["n_topics"] >= MIN_CLUSTERS:
        out["cov_topic"], out["g_topic"] = cluster_covariance(fit, answered["topic"].to_numpy())
    return out


def _bt_rows(one: dict, presets: list[str], ci: float, keys: dict) -> tuple[list[dict], list[dict]]:
    fit = one["fit"]
    params, ties = fit["params"], fit["ties"]
    se = {name: np.sqrt(np.clip(np.diag(one[f"cov_{name}"]), 0, None)) if one[f"cov_{name}"] is not None
          else np.full(len(params), np.nan) for name in ("model", "prompt", "topic")}
    t_prompt, t_topic = _t(one["g_prompt"] - 1, ci), _t(one["g_topic"] - 1, ci)
    n_answers = len(one["answered"])
    n_ties = int(one["answered"]["outcome"].isin(TIES).sum())
    common = {**keys, "n_answers": n_answers, "n_ties": n_ties, "n_prompts": one["n_prompts"],
              "n_topics": one["n_topics"]}
    note = fit["note"] if not fit["estimable"] else None
    topic_note = (f"topic-clustered CI needs at least {MIN_CLUSTERS} topics ({one['n_topics']} here)"
                  if one["cov_topic"] is None and fit["estimable"] else None)
    strengths = [{**common, "term": "log-strength", "preset": presets[0], "estimate": 0.0, "reference": True,
                  "note": "reference preset, fixed at 0"}]
    for n, preset in enumerate(presets[1:]):
        value = params[n] if fit["estimable"] else np.nan
        strengths.append({**common, "term": "log-strength", "preset": preset, "estimate": value, "reference": False,
                          "se_model": se["model"][n], "se_prompt": se["prompt"][n],
                          "ci_low": value - t_prompt * se["prompt"][n], "ci_high": value + t_prompt * se["prompt"][n],
                          "se_topic": se["topic"][n], "ci_low_topic": value - t_topic * se["topic"][n],
                          "ci_high_topic": value + t_topic * se["topic"][n],
                          "note": note or topic_note})
    if ties:
        value = params[-1] if fit["estimable"] else np.nan
        strengths.append({**common, "term": "log tie parameter (log nu)", "preset": None, "estimate": value,
                          "reference": False, "se_model": se["model"][-1], "se_prompt": se["prompt"][-1],
                          "ci_low": value - t_prompt * se["prompt"][-1],
                          "ci_high": value + t_prompt * se["prompt"][-1], "se_topic": se["topic"][-1],
                          "ci_low_topic": value - t_topic * se["topic"][-1],
                          "ci_high_topic": value + t_topic * se["topic"][-1], "note": note or topic_note})
    else:
        strengths.append({**common, "term": "log tie parameter (log nu)", "preset": None, "estimate": -np.inf,
                          "reference": False, "note": "no ties: nu = 0, the plain Bradley-Terry model"})
    pairs = []
    for a_index, b_index in itertools.combinations(range(len(presets)), 2):
        gradient = np.zeros(len(params))  # d = theta_a - theta_b
        if a_index:
            gradient[a_index - 1] += 1
        if b_index:
            gradient[b_index - 1] -= 1
        row = {**keys, "preset_a": presets[a_index], "preset_b": presets[b_index], "n_answers": n_answers,
               "note": note}
        if fit["estimable"]:
            d = float(gradient @ params)
            se_d = float(np.sqrt(max(gradient @ one["cov_prompt"] @ gradient, 0)))
            nu = math.exp(params[-1]) if ties else 0.0
            denominator = math.exp(d / 2) + math.exp(-d / 2) + nu
            row.update(log_odds=d, se_prompt=se_d, p_a_decisive=_expit(d), ci_low=_expit(d - t_prompt * se_d),
                       ci_high=_expit(d + t_prompt * se_d), p_a_wins=math.exp(d / 2) / denominator,
                       p_b_wins=math.exp(-d / 2) / denominator, p_tie=nu / denominator,
                       p_wald=float(2 * ss.t.sf(abs(d) / se_d, one["g_prompt"] - 1)) if se_d > 0 else np.nan)
            if one["cov_topic"] is not None:
                se_t = float(np.sqrt(max(gradient @ one["cov_topic"] @ gradient, 0)))
                row.update(ci_low_topic=_expit(d - t_topic * se_t), ci_high_topic=_expit(d + t_topic * se_t),
                           p_wald_topic=float(2 * ss.t.sf(abs(d) / se_t, one["g_topic"] - 1)) if se_t > 0 else np.nan)
        pairs.append(row)
    return strengths, pairs


def _expit(x: float) -> float:
    return float(1 / (1 + math.exp(-x))) if x > -700 else 0.0


def bradley_terry(comparisons: pd.DataFrame, by=BY_LEVELS, ci: float = 0.95) -> dict[str, pd.DataFrame]:
    """Per dimension (and level of ``by``): the Bradley-Terry-Davidson model of the answers.

    Each preset's log-strength against the **reference preset** (the first in alphabetical
    order, fixed at 0; with two presets, the other's log-strength is log(W / L) of its wins
    over its losses), and the log tie parameter log nu (ties: both good and both poor), fitted
    by maximum likelihood (:func:`davidson_fit`) to every answered first showing. Standard
    errors: model-based (``se_model``, answers taken as independent: too small when prompts
    differ), clustered by prompt (``se_prompt``: sandwich with statsmodels' small-sample factor,
    :func:`cluster_covariance`; the intervals ``ci_low``/``ci_high`` use t with G - 1 df, G
    prompts) and, where there are at least ``stats.MIN_CLUSTERS`` topics, clustered by topic
    (``se_topic``, ``ci_low_topic``/``ci_high_topic``). Where no answer ties, the tie parameter
    is 0 (plain Bradley-Terry). Where a preset never wins, its strength is not finite and the
    rows say so.

    Returns
    -------
    dict
        ``strengths``: :data:`BT_COLUMNS` (term "log-strength" per preset, and the tie
        parameter's row); ``probabilities``: :data:`PROBABILITY_COLUMNS`, per preset pair the
        implied P(preset_a better | decisive) = expit(log_odds) with its prompt- (and topic-)
        clustered CI, the probabilities of a win each way and of a tie, and the prompt- and
        topic-clustered Wald p of equal strengths (``p_wald``, ``p_wald_topic``: checks beside
        :func:`sign_tests`, not the declared test).

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_comparisons
    >>> table = simulate_comparisons('oncology', preference=0.7, seed=1)
    >>> bt = bradley_terry(table, by=None)
    >>> print(bt['strengths'][['dimension', 'term', 'preset', 'estimate', 'ci_low', 'ci_high']].round(3).to_string(index=False))
    dimension                       term     preset  estimate  ci_low  ci_high
        style               log-strength  glide-cfg     0.000     NaN      NaN
        style               log-strength glide-clip     1.013   0.821    1.205
        style log tie parameter (log nu)        NaN    -0.256  -0.414   -0.098
      content               log-strength  glide-cfg     0.000     NaN      NaN
      content               log-strength glide-clip     0.898   0.712    1.084
      content log tie parameter (log nu)        NaN    -0.237  -0.387   -0.087
    >>> round(float(bt['probabilities']['p_a_decisive'].iloc[0]), 3)  # glide-cfg better, of the decisive answers
    0.266
    """
    data = _prepared(comparisons)
    _need_decisive(data, "the Bradley-Terry strengths")
    presets = _presets(data)
    strengths, probabilities = [], []
    for dimension in _dimensions(data):
        mine = data[(data["dimension"] == dimension) & data["outcome"].notna()]
        for by_name, level, part in _levels(mine, by):
            if not len(part):
                continue
            keys = {"dimension": dimension, "by": by_name, "level": level}
            one = _bt_one(part, presets, ci)
            s, p = _bt_rows(one, presets, ci, keys)
            strengths += s
            probabilities += p
    return {"strengths": pd.DataFrame(strengths, columns=BT_COLUMNS),
            "probabilities": pd.DataFrame(probabilities, columns=PROBABILITY_COLUMNS)}


def win_probabilities(comparisons: pd.DataFrame, by=BY_LEVELS, ci: float = 0.95) -> pd.DataFrame:
    """The win probabilities the Bradley-Terry-Davidson model implies for each preset pair
    (``bradley_terry(...)["probabilities"]``).

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_comparisons
    >>> table = simulate_comparisons('oncology', preference=0.7, seed=1)
    >>> out = win_probabilities(table, by=None)
    >>> print(out[['dimension', 'preset_a', 'preset_b', 'p_a_wins', 'p_b_wins', 'p_tie']].round(3).to_string(index=False))
    dimension  preset_a   preset_b  p_a_wins  p_b_wins  p_tie
        style glide-cfg glide-clip     0.199     0.547  0.255
      content glide-cfg glide-clip     0.213     0.523  0.263
    """
    return bradley_terry(comparisons, by=by, ci=ci)["probabilities"]


HETEROGENEITY_COLUMNS = ["dimension", "by", "groups", "n_groups", "statistic", "df", "df_denominator", "p",
                         "p_adj", "correction", "family", "holds", "holds_by", "p_topic", "n_prompts", "n_topics",
                         "test", "note"]


def style_heterogeneity(comparisons: pd.DataFrame, by: str = "style_group", alpha: float = 0.05,
                        correction: str = "holm") -> pd.DataFrame:
    """Does the preference differ between style groups? One Wald test per dimension, its own claim.

    The Bradley-Terry-Davidson model is fitted within each level of ``by`` (its own strengths
    and tie parameter; groups without finite strengths are left out and named); the test asks
    whether the presets' log-strengths are the same in every group (H0: theta_g = theta_1 for
    every group g, (G - 1)(K - 1) restrictions for G groups and K presets). The covariance of
    the stacked estimates is clustered by prompt (a prompt is in one style, so the groups' fits
    are independent there); the statistic is referred to F with (q, C - 1) degrees of freedom
    (q restrictions, C clusters). ``p_topic`` is the same test clustered by topic (a topic has
    prompts in every group, which the joint sandwich allows for), where there are at least
    ``stats.MIN_CLUSTERS`` topics. The claim "the preference differs between style groups" is
    a family of its own (one test per dimension), adjusted by ``correction``; ``holds`` comes
    from its adjusted p.

    Returns
    -------
    DataFrame
        :data:`HETEROGENEITY_COLUMNS`, one row per dimension.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_comparisons
    >>> table = simulate_comparisons('oncology', preference=0.7, seed=1)
    >>> out = style_heterogeneity(table)
    >>> print(out[['dimension', 'groups', 'df', 'holds']].to_string(index=False))
    dimension                      groups  df  holds
        style microscopy, radiology, other   2  False
      content microscopy, radiology, other   2  False
    """
    check_choice("correction", correction, CORRECTIONS)
    data = _prepared(comparisons)
    _need_decisive(data)
    presets = _presets(data)
    rows = []
    for dimension in _dimensions(data):
        mine = data[(data["dimension"] == dimension) & data["outcome"].notna()]
        levels = _levels(mine, by)[1:]
        fits, names, skipped = [], [], []
        for _, level, part in levels:
            answered, i, j, outcome = _pair_data(part, presets)
            fit = davidson_fit(i, j, outcome, len(presets), ties=bool((outcome == 2).any()))
            if fit["estimable"]:
                fits.append((fit, answered))
                names.append(level)
            else:
                skipped.append(level)
        row = {"dimension": dimension, "by": by, "groups": ", ".join(names), "n_groups": len(names),
               "n_prompts": mine["prompt_id"].nunique(), "n_topics": mine["topic"].nunique(),
               "test": "Wald test of equal log-strengths across groups (F reference), prompt-clustered",
               "note": (f"left out (no finite strengths): {', '.join(skipped)}" if skipped else None)}
        if len(fits) < 2:
            row["note"] = (row["note"] + "; " if row["note"] else "") + "fewer than two groups with finite strengths"
            rows.append(row)
            continue
        statistic, q, df2, p = _heterogeneity_wald(fits, len(presets) - 1, "prompt_id")
        row.update(statistic=statistic, df=q, df_denominator=df2, p=p)
        if mine["topic"].nunique() >= MIN_CLUSTERS:
            row["p_topic"] = _heterogeneity_wald(fits, len(presets) - 1, "topic")[3]
        rows.append(row)
    out = pd.DataFrame(rows, columns=HETEROGENEITY_COLUMNS)
    tested = out["p"].notna()
    family = f"{int(tested.sum())} test{'s' if tested.sum() != 1 else ''}: one per dimension"
    out.loc[tested, "p_adj"] = adjusted_pvalues(out.loc[tested, "p"].to_numpy(float), correction)
    out["correction"], out["family"] = correction, family
    out["holds"] = out["p_adj"] < alpha
    out["holds_by"] = f"p_adj < {alpha:g} ({correction}, {family.split(':')[0]})"
    if out["df"].notna().all():
        out["df"] = out["df"].astype(int)
    return out


def _heterogeneity_wald(fits, k_free: int, cluster: str) -> tuple[float, int, int, float]:
    """Wald F test of equal strengths across the separately fitted groups, clustered jointly by ``cluster``."""
    sizes = [len(f["params"]) for f, _ in fits]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    total = int(offsets[-1])
    bread = np.zeros((total, total))
    labels = pd.concat([answered[cluster] for _, answered in fits]).to_numpy()
    codes = pd.factorize(labels)[0]
    g = int(codes.max()) + 1
    scores = np.zeros((len(codes), total))
    start = 0
    for n, (fit, _) in enumerate(fits):
        block = slice(offsets[n], offsets[n + 1])
        bread[block, block] = np.linalg.pinv(fit["information"])
        scores[start:start + fit["n"], block] = fit["scores"]
        start += fit["n"]
    sums = np.zeros((g, total))
    np.add.at(sums, codes, scores)
    factor = g / (g - 1) * (len(codes) - 1) / (len(codes) - total)
    cov = factor * bread @ (sums.T @ sums) @ bread
    params = np.concatenate([f["params"] for f, _ in fits])
    contrast = np.zeros(((len(fits) - 1) * k_free, total))
    for n in range(1, len(fits)):
        for m in range(k_free):
            contrast[(n - 1) * k_free + m, offsets[n] + m] = 1.0
            contrast[(n - 1) * k_free + m, offsets[0] + m] = -1.0
    difference = contrast @ params
    middle = contrast @ cov @ contrast.T
    statistic = float(difference @ np.linalg.pinv(middle) @ difference)
    q = int(np.linalg.matrix_rank(middle))
    df2 = g - 1
    return statistic, q, df2, float(ss.f.sf(statistic / q, q, df2)) if q and df2 > 0 else np.nan


# --- position bias and agreement ------------------------------------------------------------------

POSITION_COLUMNS = ["dimension", "rater", "n_decisive", "n_left", "share_left", "ci_low", "ci_high", "p", "p_adj",
                    "correction", "family", "holds", "test", "note"]


def position_bias(comparisons: pd.DataFrame, alpha: float = 0.05, correction: str = "holm",
                  ci: float = 0.95) -> pd.DataFrame:
    """Per dimension: the share of decisive answers that chose the left side, with its CI and p.

    Each rater's left and right are randomised for every showing, so without a position bias a
    decisive answer picks the left side with probability 1/2 whatever the presets' quality (a
    prompt's preference moves which preset wins, not which side: the better preset is on the
    left half the time). The test assumes that randomisation, independent across answers, and
    no rater leaning to one side under the null: the exact two-sided binomial test of 1/2 over
    the decisive first showings (Clopper-Pearson CI). The dimensions are one family (its own,
    adjusted by ``correction``); per-rater rows (``rater`` not "all") are descriptive, with
    their own unadjusted p. A position bias does not bias the preset comparison (each preset is
    on the left half the time) but adds noise to it.

    Returns
    -------
    DataFrame
        :data:`POSITION_COLUMNS`.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_comparisons
    >>> table = simulate_comparisons('oncology', position_bias=0.6, seed=2)
    >>> out = position_bias(table)
    >>> print(out[out['rater'] == 'all'][['dimension', 'n_decisive', 'share_left', 'holds']].round(3).to_string(index=False))
    dimension  n_decisive  share_left holds
        style         587       0.598  True
      content         599       0.621  True
    """
    check_choice("correction", correction, CORRECTIONS)
    data = _prepared(comparisons)
    _need_decisive(data, "a position bias")
    rows = []
    decisive = data[data["choice"].isin(["left", "right"])]
    for dimension in _dimensions(data):
        mine = decisive[decisive["dimension"] == dimension]
        groups = [("all", mine)] + [(r, mine[mine["rater"] == r]) for r in dict.fromkeys(mine["rater"])]
        for rater, part in groups:
            n, k = len(part), int((part["choice"] == "left").sum())
            row = {"dimension": dimension, "rater": rater, "n_decisive": n, "n_left": k,
                   "test": "exact binomial test of 1/2", "note": None if rater == "all" else "descriptive, one rater"}
            if n:
                result = ss.binomtest(k, n, 0.5)
                interval = result.proportion_ci(confidence_level=ci, method="exact")
                row.update(share_left=k / n, ci_low=float(interval.low), ci_high=float(interval.high),
                           p=float(result.pvalue))
            rows.append(row)
    out = pd.DataFrame(rows, columns=POSITION_COLUMNS)
    main = (out["rater"] == "all") & out["p"].notna()
    family = f"{int(main.sum())} test{'s' if main.sum() != 1 else ''}: one per dimension (all raters)"
    out.loc[main, "p_adj"] = adjusted_pvalues(out.loc[main, "p"].to_numpy(float), correction)
    out["correction"] = np.where(main, correction, None)
    out["family"] = np.where(main, family, None)
    out["holds"] = pd.Series(out["p_adj"] < alpha, dtype=object).where(main, None)
    return out


AGREEMENT_COLUMNS = ["dimension", "measure", "value", "ci_low", "ci_high", "observed_agreement", "n_units",
                     "n_raters", "n_prompts", "resampling", "note"]


def nominal_alpha_parts(matrix: np.ndarray, n_categories: int) -> np.ndarray:
    """Each unit's coincidence matrix (units x categories x categories) for Krippendorff's alpha.

    ``matrix`` is raters x units with category codes 0 .. n_categories - 1 and NaN where a rater
    gave no value. A unit with fewer than two values adds nothing. Summed over units (or over
    resampled units), they give alpha by :func:`nominal_alpha`.

    Examples
    --------
    >>> import numpy as np
    >>> parts = nominal_alpha_parts(np.array([[0, 1, 1.0], [0, 1, 0.0]]), 2)
    >>> parts.sum(axis=0)
    array([[2., 1.],
           [1., 2.]])
    """
    units = matrix.shape[1]
    counts = np.zeros((units, n_categories))
    for c in range(n_categories):
        counts[:, c] = np.sum(matrix == c, axis=0)
    m = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        parts = (counts[:, :, None] * counts[:, None, :] - np.eye(n_categories)[None] * counts[:, :, None])
        parts = parts / np.where(m > 1, m - 1, np.inf)[:, None, None]
    return parts


def nominal_alpha(coincidences: np.ndarray) -> np.ndarray:
    """Krippendorff's nominal alpha from summed coincidence matrices (... x k x k), vectorised.

    Examples
    --------
    >>> import numpy as np
    >>> import krippendorff
    >>> matrix = np.array([[0, 1, 1.0], [0, 1, 0.0]])
    >>> round(float(nominal_alpha(nominal_alpha_parts(matrix, 2).sum(axis=0))), 4)
    0.4444
    >>> round(float(krippendorff.alpha(reliability_data=matrix, level_of_measurement='nominal')), 4)
    0.4444
    """
    o = np.asarray(coincidences, float)
    n_c = o.sum(axis=-1)
    n = n_c.sum(axis=-1)
    disagree = o.sum(axis=(-1, -2)) - np.trace(o, axis1=-2, axis2=-1)
    expected = n ** 2 - (n_c ** 2).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1 - (n - 1) * disagree / expected


def choice_agreement(comparisons: pd.DataFrame, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
    """Rater agreement on the choices, relative to the pair: Krippendorff's alpha (nominal).

    Each answer is recoded as preset_a better, preset_b better, both good or both poor (so two
    raters who saw the pair on opposite sides and chose the same preset agree). Units are the
    comparisons (``pair``) of one dimension, first showings, raters x units with missing answers
    allowed; alpha from the ``krippendorff`` package, its 95% interval a percentile bootstrap
    resampling prompts with all their comparisons. Where comparisons were shown twice
    (``repeat`` = 1), ``intra-rater agreement`` is the share of repeated answers equal to the
    rater's first and ``intra-rater kappa`` Cohen's (unweighted) kappa over them, pooled over
    raters.

    Returns
    -------
    DataFrame
        :data:`AGREEMENT_COLUMNS`.

    References
    ----------
    Krippendorff, K. (2011). Computing Krippendorff's Alpha-Reliability. Annenberg School for
    Communication, University of Pennsylvania.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_comparisons
    >>> table = simulate_comparisons('oncology', preference=0.7, seed=1, repeats=0.2)
    >>> out = choice_agreement(table, n_boot=100)
    >>> print(out[['dimension', 'measure', 'n_units', 'n_raters']].to_string(index=False))
    dimension                       measure  n_units  n_raters
        style krippendorff alpha (nominal)      272         3
        style       intra-rater agreement      162         3
        style           intra-rater kappa      162         3
      content krippendorff alpha (nominal)      272         3
      content       intra-rater agreement      162         3
      content           intra-rater kappa      162         3
    """
    data = _prepared(comparisons)
    rng = np.random.default_rng(seed)
    code = {o: n for n, o in enumerate(OUTCOMES)}
    rows = []
    everything = prepare_comparisons(comparisons, repeats=True) if "outcome" not in comparisons else None
    for dimension in _dimensions(data):
        mine = data[(data["dimension"] == dimension) & data["outcome"].notna()]
        raters = list(dict.fromkeys(mine["rater"]))
        matrix = mine.pivot_table(index="rater", columns="pair", values="outcome",
                                  aggfunc="first").reindex(raters)
        values = matrix.apply(lambda s: s.map(code)).to_numpy(float)
        pairable = (~np.isnan(values)).sum(axis=0) >= 2
        prompt_of = mine.drop_duplicates("pair").set_index("pair")["prompt_id"].reindex(matrix.columns).to_numpy()
        row = {"dimension": dimension, "measure": "krippendorff alpha (nominal)", "n_units": int(pairable.sum()),
               "n_raters": len(raters), "n_prompts": len(set(prompt_of[pairable]))}
        observed = values[:, pairable]
        if len(raters) < 2 or not pairable.any():
            row["note"] = "needs at least two raters who answered the same comparison"
        elif len(np.unique(observed[~np.isnan(observed)])) < 2:
            row["note"] = "every answer is the same category: alpha is not defined"
        else:
            row["value"] = float(krippendorff.alpha(reliability_data=observed, level_of_measurement="nominal"))
            parts = nominal_alpha_parts(observed, len(OUTCOMES)).reshape(observed.shape[1], -1)
            row["observed_agreement"] = 1 - _disagreement(parts.sum(axis=0))
            codes = pd.factorize(prompt_of[pairable])[0]
            by_prompt = np.zeros((codes.max() + 1, parts.shape[1]))
            np.add.at(by_prompt, codes, parts)
            weights = _boot_weights(len(by_prompt), n_boot, rng)
            if weights is not None:
                boot = nominal_alpha((weights @ by_prompt).reshape(-1, len(OUTCOMES), len(OUTCOMES)))
                row["ci_low"], row["ci_high"] = percentile_ci(boot, ci)
            row["resampling"] = (f"percentile bootstrap over prompts, {n_boot} resamples" if n_boot > 0
                                 else "none (n_boot = 0)")
        rows.append(row)
        if everything is not None and (everything["repeat"] == 1).any():
            rows += _intra_rater(everything[(everything["dimension"] == dimension) & everything["outcome"].notna()],
                                 dimension, n_boot, rng, ci)
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def _disagreement(flat: np.ndarray) -> float:
    k = int(round(math.sqrt(flat.size)))
    o = flat.reshape(k, k)
    return float((o.sum() - np.trace(o)) / o.sum()) if o.sum() else np.nan


def _intra_rater(rows: pd.DataFrame, dimension: str, n_boot: int, rng, ci: float) -> list[dict]:
    first = rows[rows["repeat"] == 0].drop_duplicates(["rater", "pair"])
    again = rows[rows["repeat"] == 1].drop_duplicates(["rater", "pair"])
    both = first.merge(again[["rater", "pair", "outcome"]], on=["rater", "pair"], suffixes=("", "_again"))
    if both.empty:
        return []
    k = len(OUTCOMES)
    code = {o: n for n, o in enumerate(OUTCOMES)}
    x, y = both["outcome"].map(code).to_numpy(), both["outcome_again"].map(code).to_numpy()
    cells = np.zeros((len(both), k * k))
    cells[np.arange(len(both)), x * k + y] = 1
    codes = pd.factorize(both["prompt_id"])[0]
    by_prompt = np.zeros((codes.max() + 1, k * k))
    np.add.at(by_prompt, codes, cells)
    weights = _boot_weights(len(by_prompt), n_boot, rng)

    def measures(tables):
        tables = tables.reshape(-1, k, k)
        n = tables.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            po = np.trace(tables, axis1=1, axis2=2) / n
            pe = (tables.sum(axis=2) * tables.sum(axis=1)).sum(axis=1) / n ** 2
            return po, (po - pe) / (1 - pe)

    po, kappa = measures(by_prompt.sum(axis=0)[None])
    boot = measures(weights @ by_prompt) if weights is not None else (None, None)
    resampling = f"percentile bootstrap over prompts, {n_boot} resamples" if n_boot > 0 else "none (n_boot = 0)"
    common = {"dimension": dimension, "n_units": len(both), "n_raters": both["rater"].nunique(),
              "n_prompts": both["prompt_id"].nunique(), "resampling": resampling,
              "note": "first and repeated showing of the same comparison to the same rater"}
    out = []
    for name, value, b in (("intra-rater agreement", po[0], boot[0]), ("intra-rater kappa", kappa[0], boot[1])):
        low, high = percentile_ci(b, ci)
        out.append({**common, "measure": name, "value": float(value), "ci_low": low, "ci_high": high})
    return out


# --- the whole analysis ---------------------------------------------------------------------------

def analyze_comparisons(comparisons: pd.DataFrame, alpha: float = 0.05, correction: str = "holm",
                        n_boot: int = N_BOOT, seed: int = 0) -> dict[str, pd.DataFrame | str]:
    """The side-by-side analysis as one call: every table, the conclusions and the methods paragraph.

    Parameters
    ----------
    comparisons : DataFrame
        The comparisons table (:data:`COMPARISON_COLUMNS`), e.g. ``ratings.io.comparison_table(study)``
        or :func:`ratings.analysis.simulate.simulate_comparisons`.
    alpha : float
        Level of every declared family.
    correction : {"holm", "fdr_bh", "bonferroni", "none"}
        Adjustment of the families (sign tests: every pair x dimension; heterogeneity and
        position bias: their dimensions).
    n_boot : int
        Bootstrap resamples of the shares' and agreement's intervals.
    seed : int
        Seed of the resampling.

    Returns
    -------
    dict
        ``sign_tests`` (the declared test), ``shares`` (:func:`win_shares`), ``preset_shares``,
        ``bradley_terry`` and ``win_probabilities`` (:func:`bradley_terry`, overall and per style
        group and style), ``heterogeneity`` (:func:`style_heterogeneity`), ``position``,
        ``agreement``; ``conclusions`` (one sentence per dimension, lines) and ``methods`` (the
        paragraph of :func:`methods_text`), both str.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_comparisons
    >>> results = analyze_comparisons(simulate_comparisons('oncology', preference=0.7, seed=1), n_boot=100)
    >>> sorted(results)
    ['agreement', 'bradley_terry', 'conclusions', 'heterogeneity', 'methods', 'position', 'preset_shares', 'shares', 'sign_tests', 'win_probabilities']
    >>> print(results['conclusions'].splitlines()[0])
    Style: glide-clip was preferred to glide-cfg (84% of 231 decisive prompts, Holm-adjusted p < 0.001). No difference in preference between style groups was shown (microscopy, radiology, other; Holm-adjusted p = 0.550).
    """
    check_choice("correction", correction, CORRECTIONS)
    data = prepare_comparisons(comparisons)
    _need_decisive(data)
    sign = sign_tests(data, alpha=alpha, correction=correction)
    bt = bradley_terry(data)
    results: dict[str, pd.DataFrame | str] = {
        "sign_tests": sign,
        "shares": win_shares(data, n_boot=n_boot, seed=seed),
        "preset_shares": preset_shares(data, n_boot=n_boot, seed=seed),
        "bradley_terry": bt["strengths"],
        "win_probabilities": bt["probabilities"],
        "heterogeneity": style_heterogeneity(data, alpha=alpha, correction=correction),
        "position": position_bias(data, alpha=alpha, correction=correction),
        "agreement": choice_agreement(comparisons, n_boot=min(n_boot, 1000), seed=seed),
    }
    results["conclusions"] = "\n".join(conclusions(results, alpha))
    results["methods"] = methods_text(results, alpha=alpha, correction=correction, n_boot=n_boot)
    for value in results.values():
        if isinstance(value, pd.DataFrame) and comparisons.attrs.get("simulated"):
            value.attrs["simulated"] = comparisons.attrs["simulated"]
    return results


def _p_words(p: float, correction: str) -> str:
    """"Holm-adjusted p = 0.003" (the p as the family's correction left it)."""
    name = {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg", "bonferroni": "Bonferroni"}.get(correction)
    said = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    return f"{name}-adjusted {said}" if name else f"unadjusted {said}"


def conclusions(results: dict, alpha: float = 0.05) -> list[str]:
    """One sentence per dimension from the sign tests' adjusted p (and the heterogeneity test's).

    Examples
    --------
    >>> import pandas as pd
    >>> sign = pd.DataFrame({'dimension': ['style'], 'preset_a': ['glide-cfg'], 'preset_b': ['glide-clip'],
    ...     'n_decisive_prompts': [120], 'share_a': [0.36], 'p_adj': [0.003], 'holds': [True],
    ...     'preferred': ['glide-clip'], 'correction': ['holm']})
    >>> conclusions({'sign_tests': sign})
    ['Style: glide-clip was preferred to glide-cfg (64% of 120 decisive prompts, Holm-adjusted p = 0.003).']
    """
    sign = results["sign_tests"]
    lines = []
    for dimension, rows in sign.groupby("dimension", sort=False):
        said = []
        for row in rows.itertuples(index=False):
            if pd.isna(row.p_adj):
                said.append(f"{row.preset_a} and {row.preset_b} could not be compared (no prompt with a decisive "
                            "majority)")
            elif row.holds:
                winner = row.preferred
                loser = row.preset_b if winner == row.preset_a else row.preset_a
                share = row.share_a if winner == row.preset_a else 1 - row.share_a
                said.append(f"{winner} was preferred to {loser} ({share:.0%} of {row.n_decisive_prompts} decisive "
                            f"prompts, {_p_words(row.p_adj, row.correction)})")
            else:
                leader, share = ((row.preset_a, row.share_a) if row.share_a > 0.5 else (row.preset_b, 1 - row.share_a))
                said.append(f"no preference between {row.preset_a} and {row.preset_b} was shown ({leader} won "
                            f"{share:.0%} of {row.n_decisive_prompts} decisive prompts, "
                            f"{_p_words(row.p_adj, row.correction)})")
        sentence = f"{str(dimension).capitalize()}: " + "; ".join(said) + "."
        heterogeneity = results.get("heterogeneity")
        if heterogeneity is not None and len(heterogeneity):
            mine = heterogeneity[heterogeneity["dimension"] == dimension]
            if len(mine) and pd.notna(mine["p_adj"].iloc[0]):
                h = mine.iloc[0]
                sentence += (" The preference differs between style groups" if h["holds"] else
                             " No difference in preference between style groups was shown") + (
                    f" ({h['groups']}; {_p_words(h['p_adj'], h['correction'])}).")
        lines.append(sentence)
    return lines


def methods_text(results: dict | None = None, alpha: float = 0.05, correction: str = "holm",
                 n_boot: int = N_BOOT) -> str:
    """The side-by-side comparisons' methods, in words a reviewer can paste (markdown).

    With ``results`` (:func:`analyze_comparisons`' tables) the counts of prompts, raters,
    answers and the family's size are filled in.

    Examples
    --------
    >>> text = methods_text()
    >>> 'exact two-sided binomial (sign) test' in text and 'Davidson' in text and 'clustered by prompt' in text
    True
    """
    sign = results.get("sign_tests") if results else None
    agreement = results.get("agreement") if results else None
    counts = ""
    if sign is not None and len(sign):
        family = str(sign["family"].iloc[0]).split(":")[0]
        n_pairs = sign[["preset_a", "preset_b"]].drop_duplicates().shape[0]
        n_dims = sign["dimension"].nunique()
        counts = (f" The study's comparisons: up to {int(sign['n_prompts'].max())} prompts per preset pair, "
                  f"{n_pairs} preset pair{'s' if n_pairs != 1 else ''}, {n_dims} dimension{'s' if n_dims != 1 else ''}; "
                  f"the family has {family}.")
    raters = ""
    if agreement is not None and len(agreement) and agreement["n_raters"].notna().any():
        raters = f" {int(agreement['n_raters'].max())} raters answered."
    name = {"holm": "Holm's step-down procedure", "fdr_bh": "the Benjamini-Hochberg procedure",
            "bonferroni": "Bonferroni's correction", "none": "no adjustment"}[correction]
    return (
        "**Side-by-side comparisons.** For each prompt, raters saw the four-image panels of two presets side by "
        "side, left and right randomised for each rater, and answered per dimension (style, content): left better, "
        "right better, both good or both poor; only first showings are analysed." + raters + counts + " "
        "The estimand is, per dimension and preset pair, which preset a prompt's raters prefer. The unit is the "
        "prompt: each prompt has its own true preference, shared by all its raters, so its raters' answers are "
        "not independent. Each prompt was assigned to the preset its raters chose more often among their decisive "
        "answers (both good and both poor are not decisive); prompts with a draw were dropped. An exact two-sided "
        "binomial (sign) test asked whether the remaining prompts split 50:50 (scipy.stats.binomtest; "
        "Clopper-Pearson 95% CI of the share). Every preset pair x dimension formed one declared family, adjusted "
        f"by {name} at alpha = {alpha:g}; a pair is called different only by its adjusted p. The test takes "
        "prompts as independent under the null; as a check against a preference shared by a whole topic, the "
        "same sign test with topics as the unit (each topic assigned to the preset that won more of its prompts) "
        "is reported beside it, unadjusted. Shares of wins of "
        "each preset, of both good and of both poor (reported separately) have 95% percentile-bootstrap intervals "
        f"resampling prompts with all their answers ({n_boot} resamples; Wilson intervals where a share is 0 or "
        "1 or there are fewer than 5 prompts). A Bradley-Terry model with Davidson's (1970) tie parameter (ties: "
        "both good and both poor) was fitted by maximum likelihood per dimension; the log-strength of each preset "
        "is relative to the reference preset (the first in alphabetical order, fixed at 0), with sandwich 95% CIs "
        "clustered by prompt (statsmodels' small-sample factor, t with G - 1 degrees of freedom for G prompts) and, "
        "with at least 5 topics, clustered by topic; the model's implied probability that one preset is preferred "
        "in a decisive answer is reported with the same intervals. Position bias is the share of decisive "
        "answers that chose the left side, tested against 1/2 by an exact binomial test (which assumes the "
        "per-answer randomisation of sides), one test per dimension, adjusted as a family of its own. Whether the "
        "preference differs between style groups is a separate declared claim: a Wald test that the groups' "
        "Bradley-Terry log-strengths are equal (F reference, prompt-clustered covariance; topic-clustered beside "
        "it), one test per dimension, adjusted as its own family. Agreement between raters on the choices, recoded "
        "relative to the pair (first preset better, second better, both good, both poor), is Krippendorff's alpha "
        "(nominal) with a percentile-bootstrap interval over prompts; intra-rater agreement and Cohen's kappa on "
        "repeated showings where comparisons were shown twice.")


__all__ = ["AGREEMENT_COLUMNS", "BT_COLUMNS", "BY_LEVELS", "CHOICES", "COMPARISON_COLUMNS", "DIMENSION_ORDER",
           "HETEROGENEITY_COLUMNS", "MAX_LOG_STRENGTH", "N_BOOT", "OUTCOMES", "POSITION_COLUMNS", "PREPARED_COLUMNS",
           "PROBABILITY_COLUMNS", "SIGN_COLUMNS", "TIES", "analyze_comparisons", "bradley_terry", "check_comparisons",
           "choice_agreement", "cluster_covariance", "conclusions", "davidson_fit", "family_words", "methods_text",
           "nominal_alpha", "nominal_alpha_parts", "position_bias", "prepare_comparisons", "preset_shares",
           "prompt_votes", "sign_tests", "style_heterogeneity", "win_probabilities", "win_shares"]
