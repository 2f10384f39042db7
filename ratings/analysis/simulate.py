"""Simulated raters: tidy rating tables with a known truth, and power by simulation.

The model is the one the published study's numbers suggest. Each panel (a prompt shown with
one preset) has a latent quality on the 0-4 scale: the mean of its style, plus the preset's
effect, plus ``detail_effect`` for detailed prompts, plus a topic-level random effect that a
topic's short and detailed prompts and all its styles share (so the two prompts of a topic
are correlated, as in a real catalog), plus a prompt-level random effect; both are shared by
all raters and correlated between style and content. Each rater adds their own noise and cuts
the latent scale at their own thresholds (the 0.5, 1.5, 2.5, 3.5 of rounding, moved by the
rater's bias and by a small rater-and-level deviation), so raters differ in how they use the
scale, not only in a shift. Content sits a little lower and is noisier than style, as in the
study. A share of answers is flagged nonsensical (no scores); that share may depend on the
panel's latent quality (``flag_slope``) or on its style (``flag_rates``).

:func:`null_study` is a study with no style, detail or preset effect in the scores and the full
rater and topic structure (flags may still differ by style), for checking that tests hold
their level. :data:`REALISTIC` holds the settings such studies show (a topic-by-style SD of 0.4,
radiology flagged in 17% of answers, other styles in 0.4%): ``simulate_ratings(**REALISTIC)``;
:func:`simulate_ratings` keeps its older defaults, on which the examples of every analysis
module are written. :func:`power` runs the primary analysis on simulated studies with those
settings, and :func:`power_curve` answers the planning question (topics and raters for a
target power at the declared family).

:func:`simulate_comparisons` is the paired design (:mod:`ratings.analysis.compare`): every
prompt's presets side by side, sides randomised per rater, each prompt's own preference, topic
and rater effects, a position bias, ties and a planted preference; :func:`comparison_power`
runs the declared side-by-side test (the prompt-level sign test) on such studies.

Simulated raters who answer inside a study folder (``python -m ratings simulate --study``) are
:mod:`ratings.simulated_raters`, on the rating side: this module writes nothing.

Simulated tables are labelled wherever they go: rater ids start with ``sim-``, every comment
says ``simulated``, and ``df.attrs["simulated"]`` is True (figures watermark themselves from it).
They have exactly the columns and dtypes of :func:`ratings.io.tidy_table`, so every analysis
and figure runs on them unchanged; repeated showings (``repeat`` = 1) are included, as with
``tidy_table(..., include_repeats=True)``.
"""

from __future__ import annotations

import base64
import functools
import itertools
import math
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from probes import catalog as cat

from ..errors import RatingError

# Means of the latent quality per style: the published pattern (radiology about 1, i.e.
# "hints of correct"; histopathology, posters and illustrations about 3, "mainly correct").
DEFAULT_STYLE_MEANS = {"microscopy": 2.3, "histopathology": 3.0, "xray": 1.0, "mri": 1.0, "ct": 1.0,
                       "photo": 2.3, "poster": 3.0, "illustration": 3.0}
GROUP_MEANS = {"radiology": 1.0, "microscopy": 2.6, "other": 2.6}  # styles of other catalogs
OTHER_MEAN = 2.0  # the middle of the scale, "clear signs of correct"
CONTENT_SHIFT = -0.2  # content is judged a little harsher than style...
CONTENT_NOISE = 1.25  # ...and less consistently (times rater_sd)
PROMPT_CORRELATION = 0.7  # a prompt that is drawn well in style tends to be right in content
NOISE_CORRELATION = 0.4  # one look at a panel informs both of a rater's scores
SECONDS_MEDIAN, SECONDS_LOG_SD = 12.0, 0.5  # time a rater spends on one panel
START = np.datetime64("2000-01-01T09:00:00.000", "ms")  # obviously not a real rating day
SCORE_MIN, SCORE_MAX = 0, 4
CUTPOINTS = np.arange(SCORE_MIN, SCORE_MAX) + 0.5  # rounding half up = cutting the scale here
TIDY_COLUMNS = ["rater", "panel", "prompt_id", "text", "style", "style_group", "topic", "topic_group",
                "detail", "preset", "style_score", "content_score", "nonsensical", "comment", "rated_at",
                "seconds", "repeat"]
PROMPT_TEXT_COLUMNS = ["prompt_id", "text", "style", "style_group", "topic", "topic_group", "detail"]
SIM_PREFIX, SIM_COMMENT = "sim-", "simulated"
# Independent random streams, so that changing one setting (say the nonsensical rate) leaves
# the draws of the others, and the panel ids, as they were.
# New streams go at the end: SeedSequence.spawn gives the earlier ones the same seeds.
_STREAMS = ("panels", "prompts", "repeats", "order", "noise", "nonsensical", "seconds", "topics", "thresholds")
# Defaults of the topic and threshold structure. With prompt_sd 0.5, a topic SD of 0.45 makes
# short and detailed prompts of one topic correlate about 0.4 within style (prompt means over
# three raters and two presets, published-shape study), the figure a review of such a study found.
TOPIC_SD = 0.45
RATER_THRESHOLD_SD = 0.2
# What studies of this kind show, for power and calibration (simulate_ratings keeps its older
# defaults: the examples and tests of every analysis module are written on them).
# Topic-by-style SD on the latent 0-4 scale. A cumulative link mixed model (R's ordinal::clmm,
# random topic and topic x style intercepts) finds about 1.0 on a published-shape study, but on
# the logit scale: there the residual is the standard logistic (SD pi / sqrt(3) = 1.81), while
# here it is a rater's noise and the prompt effect, sqrt(0.6^2 + 0.5^2) = 0.78 points, so one
# latent point is about 1.7 / 0.78 = 2.2 logits (the kit's ordinal model gives ~1.85 per point,
# marginal over topic and prompt). 0.4 points is thus ~0.9 logits, the clmm's figure, and the
# value with which the review measured the primary analysis' power.
TOPIC_STYLE_SD = 0.4
# Nonsensical flags by style group: the published study flagged 52 of 305 radiology answers
# (17.0%) and 2 of 510 others (0.4%).
RADIOLOGY_FLAG_RATE, OTHER_FLAG_RATE = 0.17, 0.004
FLAG_RATES = MappingProxyType({"radiology": RADIOLOGY_FLAG_RATE})  # by style group; the rest OTHER_FLAG_RATE
REALISTIC = MappingProxyType({"topic_style_sd": TOPIC_STYLE_SD, "flag_rates": FLAG_RATES,
                              "nonsensical_rate": OTHER_FLAG_RATE})
"""Keywords of :func:`simulate_ratings` (and :func:`null_study`) for a study as such studies are:
``simulate_ratings(**REALISTIC)``. The defaults of :func:`power`."""


def simulate_ratings(catalog: str | Path | pd.DataFrame = "oncology", presets=("glide-cfg", "glide-clip"),
                     raters=("R1", "R2", "R3"), style_means: dict | None = None,
                     preset_effects: dict | None = None, detail_effect: float = 0.0,
                     rater_bias: dict | None = None, rater_sd: float = 0.6, prompt_sd: float = 0.5,
                     nonsensical_rate: float = 0.02, repeats: float = 0.0, seed: int = 0,
                     replicate: int = 1, topic_sd: float = TOPIC_SD,
                     rater_threshold_sd: float = RATER_THRESHOLD_SD, flag_slope: float = 0.0,
                     flag_rates: dict | None = None, topic_style_sd: float = 0.0) -> pd.DataFrame:
    """A tidy rating table of simulated raters scoring every panel of a catalog.

    Parameters
    ----------
    catalog : str, Path or DataFrame
        A catalog name or file (expanded with :func:`probes.catalog.expand`), or a prompt
        table with at least the columns prompt_id, text, style, style_group, topic,
        topic_group, detail.
    presets : sequence of str
        One panel per prompt and preset.
    raters : sequence of str
        Rater ids; ``sim-`` is put in front of each.
    style_means : dict, optional
        style -> mean latent quality on the 0-4 scale. None: the published pattern
        (:data:`DEFAULT_STYLE_MEANS`; styles of other catalogs by their group, :data:`GROUP_MEANS`).
        A dict replaces that pattern: styles it leaves out sit at the scale's middle
        (:data:`OTHER_MEAN`), so ``{}`` is a study in which no style differs.
    preset_effects : dict, optional
        preset -> shift of the latent quality (default 0 for every preset).
    detail_effect : float
        Shift for detailed prompts (over short ones).
    rater_bias : dict, optional
        rater id (with or without ``sim-``) -> shift of that rater's scores (default 0): all
        of the rater's thresholds move down by it.
    rater_sd, prompt_sd : float
        SD of a rater's noise per answer, and of the prompt effect that raters share.
    nonsensical_rate : float
        Share of answers flagged nonsensical (their scores are NA); with ``flag_slope`` the
        share at a latent quality of :data:`OTHER_MEAN`.
    repeats : float
        Share of panels each rater is shown a second time (``repeat`` = 1, fresh noise).
    seed : int
        Everything, panel ids included, is a function of the parameters and the seed.
    replicate : int
        Repeat the catalog this many times, as new prompts (prompt ids and topics get a
        ``~k`` suffix from the second copy on): for scaling benchmarks.
    topic_sd : float
        SD of the topic effect, shared by every prompt of a topic (both detail levels, all
        styles) and by all raters. The default (:data:`TOPIC_SD`) gives a within-style
        correlation of about 0.4 between a topic's short and detailed prompts; 0 makes
        prompts independent, as before this parameter existed. Being shared by all styles,
        it cancels in a paired style difference; ``topic_style_sd`` does not.
    rater_threshold_sd : float
        SD of each rater's own deviation at each of the four cut points of the scale (on top
        of ``rater_bias``); cut points stay in order. 0: every rater cuts where rounding does.
    flag_slope : float
        Log-odds change of the nonsensical flag per point of the panel's latent (style)
        quality; negative: worse panels are flagged more often. 0 (default): flags at
        random, ``nonsensical_rate`` everywhere.
    flag_rates : dict, optional
        style or style group -> share flagged nonsensical (at the scale's middle, if
        ``flag_slope`` is set). A style's own key wins over its group's; a key that is both a
        style and a group (oncology's ``microscopy``) is the style. Styles left out use
        ``nonsensical_rate``. The published study's rates are :data:`FLAG_RATES` (radiology
        17%, the rest 0.4%): ``flag_rates=FLAG_RATES, nonsensical_rate=OTHER_FLAG_RATE``, or
        ``**REALISTIC``.
    topic_style_sd : float
        SD of a topic-by-style effect, shared by the short and detailed prompt of one topic
        in one style (default 0, so that tables made before it existed stay as they were;
        :data:`TOPIC_STYLE_SD`, 0.4, is what such studies show, and :data:`REALISTIC` uses it).
        It makes the paired style differences of a topic's two prompts correlated, the case in
        which tests must cluster by topic.

    Returns
    -------
    DataFrame
        The columns and dtypes of :func:`ratings.io.tidy_table`, one row per (rater, showing),
        ordered by rater and then by the rater's (shuffled) order; ``attrs["simulated"]`` is
        True and ``attrs["simulation"]`` holds the parameters.

    Examples
    --------
    >>> import pandas as pd
    >>> prompts = pd.DataFrame({'prompt_id': ['p1', 'p2', 'p3', 'p4'], 'text': ['a', 'b', 'c', 'd'],
    ...                         'style': ['xray', 'xray', 'photo', 'photo'],
    ...                         'style_group': ['radiology', 'radiology', 'other', 'other'],
    ...                         'topic': ['t1', 't2', 't1', 't2'], 'topic_group': ['g'] * 4,
    ...                         'detail': ['short', 'detailed'] * 2})
    >>> tidy = simulate_ratings(prompts, presets=['cfg'], raters=['A', 'B'], seed=0)
    >>> print(tidy[['rater', 'prompt_id', 'style', 'style_score', 'content_score']].to_string(index=False))
    rater prompt_id style  style_score  content_score
    sim-A        p4 photo            2              3
    sim-A        p1  xray            0              1
    sim-A        p3 photo            2              2
    sim-A        p2  xray            4              4
    sim-B        p1  xray            2              1
    sim-B        p2  xray            4              3
    sim-B        p4 photo            4              2
    sim-B        p3 photo            2              2
    >>> tidy.attrs['simulated']
    True
    """
    prompts, catalog_name = _prompt_table(catalog, replicate)
    presets = distinct_names(presets, "presets")
    rater_ids = [_sim_id(r) for r in distinct_names(raters, "raters")]
    _check_parameters(nonsensical_rate=nonsensical_rate, repeats=repeats, rater_sd=rater_sd, prompt_sd=prompt_sd,
                      topic_sd=topic_sd, topic_style_sd=topic_style_sd, rater_threshold_sd=rater_threshold_sd,
                      flag_slope=flag_slope)
    means = latent_style_means(prompts, style_means)
    rates = _flag_rates(prompts, flag_rates, nonsensical_rate)
    effects = _keyed(preset_effects, presets, "preset_effects", "presets")
    bias = _keyed({_sim_id(k): v for k, v in (rater_bias or {}).items()}, rater_ids, "rater_bias", "raters")
    rng = _streams(seed)

    panels = _panels(prompts, presets, means, effects, detail_effect, prompt_sd, topic_sd, topic_style_sd, rng)
    shown = _showings(len(rater_ids), len(panels["prompt"]), repeats, rng)
    rater_cuts = rater_cutpoints(rng["thresholds"], [bias[r] for r in rater_ids], rater_threshold_sd)
    answers = _answers(panels, shown, prompts["style"], rates, flag_slope, rater_sd, rater_cuts, rng)
    df = _tidy(prompts, presets, rater_ids, panels, shown, answers, rng["panels"])
    df.attrs["simulated"] = True
    df.attrs["simulation"] = {
        "catalog": catalog_name, "prompts": len(prompts), "presets": list(presets), "raters": rater_ids,
        "style_means": means, "preset_effects": effects, "detail_effect": detail_effect, "rater_bias": bias,
        "rater_sd": rater_sd, "prompt_sd": prompt_sd, "nonsensical_rate": nonsensical_rate,
        "repeats": repeats, "seed": seed, "replicate": replicate, "content_shift": CONTENT_SHIFT,
        "content_noise": CONTENT_NOISE, "prompt_correlation": PROMPT_CORRELATION,
        "noise_correlation": NOISE_CORRELATION, "topic_sd": topic_sd, "topic_style_sd": topic_style_sd,
        "rater_threshold_sd": rater_threshold_sd, "rater_cutpoints": {
            r: [float(c) for c in row] for r, row in zip(rater_ids, rater_cuts, strict=True)},
        "flag_slope": flag_slope, "flag_rates": rates,
    }
    return df


# --- the steps of simulate_ratings ------------------------------------------------------------

def _sim_id(name) -> str:
    """``name`` as a simulated rater's id: ``sim-`` in front unless it is there already."""
    name = str(name)
    return name if name.startswith(SIM_PREFIX) else SIM_PREFIX + name


def _check_parameters(nonsensical_rate, repeats, flag_slope, **sds) -> None:
    """:class:`RatingError` unless the shares are shares, the SDs SDs and the flag slope finite."""
    check_share(nonsensical_rate, "nonsensical_rate")
    check_share(repeats, "repeats")
    for name, value in sds.items():
        check_sd(value, name)
    if not np.isfinite(flag_slope):
        raise RatingError(f"flag_slope is a log-odds change per point, a finite number, not {flag_slope}")


def _streams(seed: int) -> dict[str, np.random.Generator]:
    """One independent generator per name in :data:`_STREAMS`, all derived from ``seed``."""
    seeds = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    return dict(zip(_STREAMS, (np.random.default_rng(s) for s in seeds), strict=True))


def _panels(prompts: pd.DataFrame, presets: list[str], means: dict, effects: dict, detail_effect: float,
            prompt_sd: float, topic_sd: float, topic_style_sd: float, rng: dict) -> dict[str, np.ndarray]:
    """The panels (prompt-major, presets inner) and their latent style and content quality.

    A panel's latent style quality is its style's mean, plus ``detail_effect`` for a detailed
    prompt, plus the prompt's, its topic's (and its topic-by-style cell's) random effect, plus
    its preset's effect; content adds :data:`CONTENT_SHIFT` and its own correlated part of the
    random effects. Returns ``prompt`` and ``preset`` (each panel's row in ``prompts`` and its
    index in ``presets``), ``style`` and ``content`` (the latent qualities).
    """
    n_prompts, n_presets = len(prompts), len(presets)
    panel_prompt = np.repeat(np.arange(n_prompts), n_presets)
    panel_preset = np.tile(np.arange(n_presets), n_prompts)
    prompt_effect = rng["prompts"].multivariate_normal(
        [0.0, 0.0], covariance(prompt_sd, prompt_sd, PROMPT_CORRELATION), size=n_prompts)
    topic_codes, topics = pd.factorize(prompts["topic"])
    topic_effect = rng["topics"].multivariate_normal(
        [0.0, 0.0], covariance(topic_sd, topic_sd, PROMPT_CORRELATION), size=len(topics))
    prompt_effect = prompt_effect + topic_effect[topic_codes]
    if topic_style_sd > 0:  # drawn only when asked, so that other draws stay as they were
        cell_codes, cells = pd.factorize(pd.MultiIndex.from_arrays([prompts["topic"], prompts["style"]]))
        cell_effect = rng["topics"].multivariate_normal(
            [0.0, 0.0], covariance(topic_style_sd, topic_style_sd, PROMPT_CORRELATION), size=len(cells))
        prompt_effect = prompt_effect + cell_effect[cell_codes]
    base = (prompts["style"].map(means).to_numpy(float)
            + detail_effect * (prompts["detail"] == "detailed").to_numpy(float))
    style = (base + prompt_effect[:, 0])[panel_prompt] + np.array([effects[p] for p in presets])[panel_preset]
    content = style + CONTENT_SHIFT + (prompt_effect[:, 1] - prompt_effect[:, 0])[panel_prompt]
    return {"prompt": panel_prompt, "preset": panel_preset, "style": style, "content": content}


def _showings(n_raters: int, n_panels: int, repeats: float, rng: dict) -> dict[str, np.ndarray]:
    """Who sees which panel when: every panel once per rater, a share ``repeats`` of them again.

    Each rater sees the panels in their own random order; a repeat comes after its first
    showing. Returns ``rater``, ``panel`` and ``repeat`` (0 or 1) per showing, ordered by
    rater and then by the rater's order.
    """
    rater_of = np.repeat(np.arange(n_raters), n_panels)
    panel_of = np.tile(np.arange(n_panels), n_raters)
    repeat_of = np.zeros(len(panel_of), dtype=np.int64)
    first_key = rng["order"].random(len(panel_of))
    n_again = round(repeats * n_panels)
    if n_again:
        pick = np.argsort(rng["repeats"].random((n_raters, n_panels)), axis=1)[:, :n_again]
        again = (pick + np.arange(n_raters)[:, None] * n_panels).ravel()  # positions of first showings
        later = first_key[again] + (1 - first_key[again]) * rng["order"].random(len(again))
        rater_of = np.concatenate([rater_of, rater_of[again]])
        panel_of = np.concatenate([panel_of, panel_of[again]])
        repeat_of = np.concatenate([repeat_of, np.ones(len(again), dtype=np.int64)])
        first_key = np.concatenate([first_key, later])  # a repeat always comes after its first showing
    order = np.lexsort((first_key, rater_of))
    return {"rater": rater_of[order], "panel": panel_of[order], "repeat": repeat_of[order]}


def _answers(panels: dict, shown: dict, styles: pd.Series, rates: dict, flag_slope: float, rater_sd: float,
             rater_cuts: np.ndarray, rng: dict) -> dict:
    """What each showing's rater answers: the flag, the two scores and the seconds spent.

    The rater's noise (content noisier, correlated with style) is added to the panel's latent
    quality and cut at the rater's own cut points; a flagged answer has no scores. The flag's
    chance is the style's rate, moved by ``flag_slope`` per point of latent style quality.
    """
    panel_of, n = shown["panel"], len(shown["panel"])
    noise = rng["noise"].multivariate_normal(
        [0.0, 0.0], covariance(rater_sd, rater_sd * CONTENT_NOISE, NOISE_CORRELATION), size=n)
    cuts = rater_cuts[shown["rater"]]
    flag_rate = np.array([rates[s] for s in styles])[panels["prompt"][panel_of]]
    if flag_slope:
        flag_rate = _expit(_logit(flag_rate) + flag_slope * (panels["style"][panel_of] - OTHER_MEAN))
    flagged = rng["nonsensical"].random(n) < flag_rate
    return {"nonsensical": flagged,
            "style_score": _score(panels["style"][panel_of] + noise[:, 0], flagged, cuts),
            "content_score": _score(panels["content"][panel_of] + noise[:, 1], flagged, cuts),
            "seconds": np.round(rng["seconds"].lognormal(math.log(SECONDS_MEDIAN), SECONDS_LOG_SD, n), 1)}


def _tidy(prompts: pd.DataFrame, presets: list[str], rater_ids: list[str], panels: dict, shown: dict,
          answers: dict, panel_rng: np.random.Generator) -> pd.DataFrame:
    """The showings and answers as a table with the columns and dtypes of :data:`TIDY_COLUMNS`."""
    panel_of, n = shown["panel"], len(shown["panel"])
    prompt_of = panels["prompt"][panel_of]
    table = {"rater": _take(rater_ids, shown["rater"]),
             "panel": _take(_panel_ids(panel_rng, len(panels["prompt"])), panel_of)}
    for column in PROMPT_TEXT_COLUMNS:
        table[column] = _take(prompts[column], prompt_of)
    table.update({
        "preset": _take(presets, panels["preset"][panel_of]),
        "style_score": answers["style_score"], "content_score": answers["content_score"],
        "nonsensical": answers["nonsensical"], "comment": _take([SIM_COMMENT], np.zeros(n, dtype=np.int64)),
        "rated_at": _timestamps(answers["seconds"], shown["rater"], len(rater_ids)), "seconds": answers["seconds"],
        "repeat": shown["repeat"],
    })
    return pd.DataFrame(table, columns=TIDY_COLUMNS)


NULL_FIXED = ("style_means", "preset_effects", "detail_effect")


def null_study(catalog: str | Path | pd.DataFrame = "oncology", **kw) -> pd.DataFrame:
    """A simulated study in which the scores carry no style, detail or preset effect: for calibration.

    Every style sits at the scale's middle, detailed prompts equal short ones and presets
    equal each other; raters keep their noise and their own cut points, topics and prompts
    their random effects (a topic-by-style effect too, with ``topic_style_sd``). It is a null
    of the scores, not of the flags: flags keep their rate, which may depend on style
    (``flag_rates``, as in the published study, where radiology was flagged far more often:
    :data:`REALISTIC`) or on latent quality (``flag_slope``, which with no style effect cannot
    make flags depend on style). So it checks that an analysis of the unflagged scores holds
    its level while the flags differ by style. Other keywords go to :func:`simulate_ratings`;
    ``attrs["simulation"]["null"]`` is True.

    Parameters
    ----------
    catalog : str, Path or DataFrame
        As in :func:`simulate_ratings`.
    **kw
        Other :func:`simulate_ratings` keywords (not those in :data:`NULL_FIXED`), e.g.
        ``**REALISTIC``.

    Returns
    -------
    DataFrame
        A tidy table as :func:`simulate_ratings` makes it.

    Examples
    --------
    >>> import pandas as pd
    >>> prompts = pd.DataFrame({'prompt_id': ['p1', 'p2', 'p3', 'p4'], 'text': ['a', 'b', 'c', 'd'],
    ...                         'style': ['xray', 'xray', 'photo', 'photo'],
    ...                         'style_group': ['radiology', 'radiology', 'other', 'other'],
    ...                         'topic': ['t1', 't2', 't1', 't2'], 'topic_group': ['g'] * 4,
    ...                         'detail': ['short', 'detailed'] * 2})
    >>> tidy = null_study(prompts, presets=['cfg'], raters=['A'], seed=0)
    >>> tidy.attrs['simulation']['null'], tidy.attrs['simulation']['style_means']
    (True, {'xray': 2.0, 'photo': 2.0})

    Flags by style group, scores without a style effect:

    >>> tidy = null_study(prompts, presets=['cfg'], raters=['A'], seed=0, **REALISTIC)
    >>> tidy.attrs['simulation']['flag_rates']
    {'xray': 0.17, 'photo': 0.004}
    """
    fixed = sorted(set(kw) & set(NULL_FIXED))
    if fixed:
        raise RatingError(f"null_study fixes {', '.join(fixed)} (no style, detail or preset effect in the "
                          "scores); use simulate_ratings to plant effects")
    df = simulate_ratings(catalog, style_means={}, preset_effects=None, detail_effect=0.0, **kw)
    df.attrs["simulation"]["null"] = True
    return df


# --- power ----------------------------------------------------------------------------------

POWER_COLUMNS = ["contrast", "dimension", "n_topics", "n_raters", "effect", "alpha", "n_sim", "power",
                 "power_ci_low", "power_ci_high", "power_unadjusted", "power_wilcoxon", "power_wilcoxon_unadjusted",
                 "n_not_tested", "method"]
DETAIL_PER_TOPIC = 2  # short and detailed: the two paired prompts of a topic
STYLE_PAIRS = math.comb(len(DEFAULT_STYLE_MEANS), 2)  # 28: the declared family, every pair of the 8 styles
METHODS = ("primary", "wilcoxon")
N_SIM = {"primary": 100, "wilcoxon": 200}  # default simulated studies per method


def power(contrast=("xray", "photo"), dimension: str = "style", n_topics: int = 17, n_raters: int = 3,
          effect: float = 1.0, rater_sd: float = 0.6, prompt_sd: float = 0.5, alpha: float = 0.05,
          aggregate: str = "median", n_sim: int | None = None, seed: int = 0, correction_family: int = STYLE_PAIRS,
          center: float = 2.0, topic_sd: float = TOPIC_SD, rater_threshold_sd: float = RATER_THRESHOLD_SD, *,
          method: str = "primary", topic_style_sd: float = TOPIC_STYLE_SD, flag_rates: dict | None = None,
          nonsensical_rate: float | None = None, style_means: dict | None = None, nonsensical: str = "exclude",
          correction: str = "holm", presets=("glide-cfg",), catalog="oncology", n_jobs: int = 1) -> pd.DataFrame:
    """Power of the primary analysis to find a difference between two styles, by simulating studies.

    ``method="primary"`` (default) runs the analysis that will be run. Each simulated study is a
    tidy table of :func:`simulate_ratings`: the catalog's design cut (or repeated) to
    ``n_topics`` topics, each with a short and a detailed prompt in every style of the catalog
    (8 for oncology), one panel per prompt and preset, rated by ``n_raters`` raters; the
    contrast's styles have latent means ``center -/+ effect / 2`` (the first lower for a
    positive ``effect``), the other styles their published pattern (``style_means``); with the
    topic-by-style effect and the flag rates by style of :data:`REALISTIC`. Each study is then
    analysed as the primary analysis' part (b): ``stats.prepare(tidy, dimension, "none",
    nonsensical)`` (each rater's own unflagged answers) and
    :func:`ratings.analysis.protocol.ordinal_contrasts` with ``correction`` over every style
    pair (Holm over 28 pairs, the declared family). A study detects the contrast when its
    pair has ``p_adj < alpha`` with the estimate in the planted direction (either direction
    when ``effect`` is 0, so that the null's power is the two-sided level). On the same
    studies, ``power_unadjusted`` counts ``p < alpha`` (the contrast planned alone), and
    ``power_wilcoxon`` / ``power_wilcoxon_unadjusted`` the rank path
    (:func:`ratings.analysis.stats.pairwise` on topic means of panel medians, same family). A
    study whose pair gets no p-value (no fit, or fewer than ``stats.MIN_CLUSTERS`` topics) is
    counted as no detection (``n_not_tested``).

    Time: 0.25 s (an idle core) to 0.5 s per study with 17 topics and 3 raters (the ordinal
    fit is most of it), so the default 100 studies take half a minute to a minute; ``n_jobs``
    runs them in that many processes (same result).

    ``method="wilcoxon"`` is the former fast path, vectorised: only the two styles, no flags,
    the Wilcoxon signed-rank test on topic means of panel medians (``aggregate``), held to
    Holm's first step over ``correction_family`` tests (``p * correction_family < alpha``: a
    lower bound of the Holm power), both directions counted; it now includes the
    topic-by-style effect (``topic_style_sd=0`` for the former model).

    Measured (x-ray vs photo, latent effect 0.5, 17 topics, 3 raters, one preset, 200
    studies): the primary analysis has 64% power for the contrast alone and 25% under Holm
    over the 28 pairs (12% with every other style at the middle, ``style_means={}``, where
    fewer other pairs are rejected before it); the rank path on the same studies 59% and 20%.
    The former fast path gave 73% alone (2000 studies; 53% with the topic-by-style SD of 0.4)
    and 18% at Holm's first step.

    Parameters
    ----------
    contrast : (str, str)
        The two styles compared.
    dimension : {"style", "content"}
        The rating dimension analysed.
    n_topics, n_raters : int
        Topics (each with a short and a detailed prompt per style) and raters per study.
    effect : float
        Latent difference between the two styles, in scale points (second minus first).
    rater_sd, prompt_sd, topic_sd, rater_threshold_sd, topic_style_sd : float
        As in :func:`simulate_ratings`; ``topic_style_sd`` defaults to :data:`TOPIC_STYLE_SD` (0.4).
    alpha : float
        Level of the test.
    aggregate : {"median", "mean"}
        ``method="wilcoxon"``: how a panel's ratings are combined (the primary method's rank
        columns use the analysis' median).
    n_sim : int, optional
        Simulated studies (default :data:`N_SIM`: 100 primary, 200 wilcoxon).
    seed : int
        Study ``i`` is ``simulate_ratings(seed=...)`` with a seed drawn from (seed, n_topics,
        n_raters): the same studies for every effect size.
    correction_family : int
        ``method="wilcoxon"``: the family size of Holm's first step. ``method="primary"``: the
        default (the 28 pairs), or 1 for the contrast tested alone (``correction="none"``).
    center : float
        Mid-point of the two styles' latent means.
    method : {"primary", "wilcoxon"}
        The analysis simulated.
    flag_rates, nonsensical_rate : optional
        As in :func:`simulate_ratings`; None: :data:`REALISTIC`'s (radiology 17%, the rest
        0.4%). ``method="wilcoxon"`` has no flags.
    style_means : dict, optional
        Latent means of the other styles (None: the published pattern; a dict: as in
        :func:`simulate_ratings`, styles left out at the middle). The contrast's styles are
        set by ``center`` and ``effect``.
    nonsensical : {"exclude", "lowest", "zero", "panel-zero"}
        The policy of :func:`ratings.analysis.stats.prepare`: "exclude" is part (b) of the
        primary analysis, "lowest" the composite estimand.
    correction : {"holm", "fdr_bh", "bonferroni", "none"}
        The family's adjustment.
    presets, catalog
        Presets (one panel per prompt and preset; the published study had one) and the
        catalog whose design and styles are simulated.
    n_jobs : int
        Processes for ``method="primary"``.

    Returns
    -------
    DataFrame
        One row: contrast, dimension, n_topics, n_raters, effect, alpha, n_sim, power (the
        declared family's) with its 95% Wilson interval (power_ci_low, power_ci_high),
        power_unadjusted, power_wilcoxon, power_wilcoxon_unadjusted (NaN for the fast path),
        n_not_tested, method. ``attrs["power"]`` holds the settings, the test, the family, the
        seconds taken and ``studies`` (per simulated study: seed, the pair's p, p_adj and effect
        of the first style over the second, and the same of the rank path, ``w_p``...).

    References
    ----------
    Wilson EB (1927). Probable inference, the law of succession, and statistical inference.
    J Am Stat Assoc 22:209-212.

    Examples
    --------
    >>> result = power(('xray', 'photo'), n_topics=8, effect=3.0, n_sim=4)
    >>> print(result[['contrast', 'n_topics', 'power', 'power_unadjusted', 'power_wilcoxon']].to_string(index=False))
         contrast  n_topics  power  power_unadjusted  power_wilcoxon
    xray vs photo         8    1.0               1.0             0.0

    With 8 topics the rank test cannot reach p < 0.05 / 28 (its smallest p is 2 / 2^8). The
    former fast path, the contrast alone:

    >>> fast = power(('xray', 'photo'), n_topics=10, effect=1.5, n_sim=50, correction_family=1, method='wilcoxon')
    >>> print(fast[['contrast', 'n_topics', 'n_raters', 'power', 'power_ci_low', 'power_ci_high']].round(3).to_string(index=False))
         contrast  n_topics  n_raters  power  power_ci_low  power_ci_high
    xray vs photo        10         3    1.0         0.929            1.0
    """
    a, b = _contrast(contrast)
    if method not in METHODS:
        raise RatingError(f"method {method!r}: use 'primary' (the analysis that will be run) or 'wilcoxon' (the "
                          "fast rank-test path)")
    if dimension not in ("style", "content"):
        raise RatingError(f"dimension {dimension!r}: use 'style' or 'content'")
    if aggregate not in ("median", "mean"):
        raise RatingError(f"aggregate {aggregate!r}: use 'median' or 'mean' (across raters)")
    n_sim = N_SIM[method] if n_sim is None else n_sim
    for value, name in ((n_topics, "n_topics"), (n_raters, "n_raters"), (n_sim, "n_sim"),
                        (correction_family, "correction_family"), (n_jobs, "n_jobs")):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise RatingError(f"{name} must be a whole number of at least 1, not {value!r}")
    if not 0 < alpha < 1:
        raise RatingError(f"alpha must lie between 0 and 1, not {alpha}")
    if not np.isfinite(effect) or not np.isfinite(center):
        raise RatingError(f"effect and center are points of the latent scale, finite numbers, not {effect}, {center}")
    for value, name in ((rater_sd, "rater_sd"), (prompt_sd, "prompt_sd"), (topic_sd, "topic_sd"),
                        (rater_threshold_sd, "rater_threshold_sd"), (topic_style_sd, "topic_style_sd")):
        check_sd(value, name)
    from .stats import CORRECTIONS, POLICIES

    if correction not in CORRECTIONS:
        raise RatingError(f"correction {correction!r}: use one of {', '.join(CORRECTIONS)}")
    settings = {"contrast": [a, b], "dimension": dimension, "n_topics": n_topics, "n_raters": n_raters,
                "effect": effect, "alpha": alpha, "n_sim": n_sim, "seed": seed, "center": center,
                "rater_sd": rater_sd, "prompt_sd": prompt_sd, "topic_sd": topic_sd,
                "rater_threshold_sd": rater_threshold_sd, "topic_style_sd": topic_style_sd}
    if method == "wilcoxon":
        if (flag_rates or nonsensical_rate) or style_means is not None:
            raise RatingError("method='wilcoxon' simulates the two styles' scores only, without flags or other "
                              "styles; use method='primary' for flag_rates, nonsensical_rate and style_means")
        if correction not in ("holm", "bonferroni", "none"):
            raise RatingError(f"method='wilcoxon' holds the contrast to Holm's first step; correction "
                              f"{correction!r} needs the whole family: use method='primary'")
        family = 1 if correction == "none" else correction_family
        return _wilcoxon_power(a, b, settings, aggregate, family)
    if nonsensical not in POLICIES:
        raise RatingError(f"nonsensical {nonsensical!r}: use one of {', '.join(POLICIES)}")
    if correction_family == 1:
        correction = "none"  # the contrast tested alone, as the fast path's correction_family=1
    elif correction_family != STYLE_PAIRS:
        raise RatingError(f"correction_family={correction_family}: method='primary' adjusts over every style pair it "
                          f"fits (correction={correction!r}); give 1 for the contrast alone, or use method='wilcoxon'")
    return _primary_power(a, b, settings, n_jobs=n_jobs, flag_rates=flag_rates, nonsensical_rate=nonsensical_rate,
                          style_means=style_means, nonsensical=nonsensical, correction=correction,
                          presets=presets, catalog=catalog)


def design_prompts(n_topics: int, catalog: str | Path | pd.DataFrame = "oncology") -> pd.DataFrame:
    """The catalog's prompt table cut, or repeated, to ``n_topics`` topics (every style and detail of each).

    Topics are taken in the catalog's order; beyond the catalog's own topics it is repeated as
    new topics (``~2``, ``~3``, ... after the topic and prompt ids), as ``replicate`` does.

    Examples
    --------
    >>> prompts = design_prompts(20)
    >>> prompts['topic'].nunique(), len(prompts), prompts['style'].nunique()
    (20, 320, 8)
    """
    if not isinstance(n_topics, (int, np.integer)) or isinstance(n_topics, bool) or n_topics < 1:
        raise RatingError(f"n_topics must be a whole number of at least 1, not {n_topics!r}")
    base, _ = _prompt_table(catalog, 1)
    copies = math.ceil(n_topics / base["topic"].nunique())
    prompts = _prompt_table(base, copies)[0] if copies > 1 else base
    keep = list(pd.unique(prompts["topic"]))[:n_topics]
    return prompts[prompts["topic"].isin(keep)].reset_index(drop=True)


def _primary_power(a, b, settings, n_jobs, flag_rates, nonsensical_rate, style_means, nonsensical, correction,
                   presets, catalog) -> pd.DataFrame:
    """:func:`power` by the primary analysis: simulate, fit and count."""
    import time
    from concurrent.futures import ProcessPoolExecutor

    n_topics, n_raters, n_sim = settings["n_topics"], settings["n_raters"], settings["n_sim"]
    effect, center = settings["effect"], settings["center"]
    prompts = design_prompts(n_topics, catalog)
    styles = list(pd.unique(prompts["style"]))
    for style in (a, b):
        if style not in styles:
            raise RatingError(f"contrast style {style!r} is not in the catalog; its styles are {', '.join(styles)}")
    if style_means and set(style_means) & {a, b}:
        raise RatingError(f"style_means names {sorted(set(style_means) & {a, b})[0]!r}, a style of the contrast: "
                          "its mean is center -/+ effect / 2")
    means = latent_style_means(prompts, style_means)
    means[a], means[b] = center - effect / 2, center + effect / 2
    rate = OTHER_FLAG_RATE if nonsensical_rate is None else nonsensical_rate
    check_share(rate, "nonsensical_rate")
    given = dict(FLAG_RATES if flag_rates is None else flag_rates)
    kw = {"presets": tuple(presets), "raters": tuple(f"R{i + 1}" for i in range(n_raters)), "style_means": means,
          "rater_sd": settings["rater_sd"], "prompt_sd": settings["prompt_sd"], "topic_sd": settings["topic_sd"],
          "topic_style_sd": settings["topic_style_sd"], "rater_threshold_sd": settings["rater_threshold_sd"],
          "nonsensical_rate": rate, "flag_rates": given}
    rates = _flag_rates(prompts, given, rate)  # refuses a wrong key before any study runs
    seeds = [int(s) for s in np.random.SeedSequence([settings["seed"], n_topics, n_raters]).generate_state(n_sim)]
    chunks = [seeds[i::n_jobs] for i in range(min(n_jobs, n_sim))]
    jobs = [(prompts, kw, chunk, a, b, settings["dimension"], nonsensical, correction) for chunk in chunks]
    started = time.perf_counter()
    if len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=len(jobs)) as pool:
            parts = list(pool.map(_primary_studies, jobs))
    else:
        parts = [_primary_studies(jobs[0])]
    seconds = time.perf_counter() - started
    by_seed = {row["seed"]: row for part in parts for row in part}
    found = pd.DataFrame([by_seed[s] for s in seeds])
    alpha = settings["alpha"]
    hits = {name: _detected(found[f"{path}p{adj}"], found[f"{path}effect"], alpha, effect)
            for name, path, adj in (("power", "", "_adj"), ("power_unadjusted", "", ""),
                                    ("power_wilcoxon", "w_", "_adj"), ("power_wilcoxon_unadjusted", "w_", ""))}
    k = int(hits["power"].sum())
    low, high = wilson_interval(k, n_sim)
    row = {"contrast": f"{a} vs {b}", **{c: settings[c] for c in POWER_COLUMNS[1:7]}, "power": k / n_sim,
           "power_ci_low": low, "power_ci_high": high,
           **{name: float(h.mean()) for name, h in hits.items() if name != "power"},
           "n_not_tested": int((~np.isfinite(found["p"].to_numpy(float))).sum()), "method": "primary"}
    out = pd.DataFrame([row], columns=POWER_COLUMNS)
    family = found["family"].dropna()
    out.attrs["power"] = {
        **settings, "method": "primary", "correction": correction, "nonsensical": nonsensical,
        "family": family.mode().iloc[0] if len(family) else None, "presets": list(presets),
        "style_means": means, "flag_rates": rates,
        "test": f"ordinal (cumulative logit on each rater's answers, nonsensical={nonsensical!r}, clustered by topic), "
                f"{correction} over every style pair",
        "detection": f"p_adj < {alpha} with the first style lower" + (" (either direction: effect 0)" if effect == 0
                                                                     else ""),
        "seconds": seconds, "seconds_per_study": seconds / n_sim * len(jobs), "n_jobs": len(jobs),
        "studies": found.to_dict("list")}  # plain lists: pandas compares attrs when it concatenates
    return out


def _primary_studies(job) -> list[dict]:
    """Simulate and analyse the studies of one chunk of seeds: the contrast's p, p_adj and effect, both paths."""
    from ..errors import AnalysisError
    from . import protocol, stats

    prompts, kw, seeds, a, b, dimension, nonsensical, correction = job
    out = []
    for seed in seeds:
        tidy = simulate_ratings(prompts, seed=seed, **kw)
        row = {"seed": seed}
        try:
            table = protocol.ordinal_contrasts(stats.prepare(tidy, dimension, "none", nonsensical), correction)
            row.update(_pair(table, a, b), family=str(table["family"].iloc[0]))
        except AnalysisError:  # no fit: no detection, counted in n_not_tested
            row.update(_pair(None, a, b), family=None)
        try:
            ranks = stats.pairwise(stats.prepare(tidy, dimension, "median", nonsensical), correction=correction, n_boot=0)
            row.update({f"w_{k}": v for k, v in _pair(ranks, a, b).items()})
        except AnalysisError:
            row.update({f"w_{k}": v for k, v in _pair(None, a, b).items()})
        out.append(row)
    return out


def _pair(table, a, b) -> dict:
    """p, p_adj and the effect of a over b (negative: a lower) of the table's (a, b) row, either orientation."""
    if table is not None:
        for first, second, sign in ((a, b, 1.0), (b, a, -1.0)):
            hit = table[(table["a"] == first) & (table["b"] == second)]
            if len(hit):
                r = hit.iloc[0]
                return {"p": float(r["p"]), "p_adj": float(r["p_adj"]), "effect": sign * float(r["effect"])}
    return {"p": np.nan, "p_adj": np.nan, "effect": np.nan}


def _detected(p, estimate, alpha: float, effect: float) -> np.ndarray:
    """p < alpha with the estimate in the planted direction (a lower for a positive effect); any direction at 0."""
    p, estimate = np.asarray(p, float), np.asarray(estimate, float)
    hit = np.isfinite(p) & (p < alpha)
    if effect > 0:
        hit &= estimate < 0
    elif effect < 0:
        hit &= estimate > 0
    return hit


def _wilcoxon_power(a, b, settings, aggregate, correction_family) -> pd.DataFrame:
    """:func:`power` by the former fast path: two styles, vectorised, Holm's first step."""
    n_topics, n_raters, n_sim, seed = settings["n_topics"], settings["n_raters"], settings["n_sim"], settings["seed"]
    effect, center, alpha = settings["effect"], settings["center"], settings["alpha"]
    rng = np.random.default_rng(np.random.SeedSequence([seed, n_topics, n_raters]))
    structure = np.random.default_rng(np.random.SeedSequence([seed, n_topics, n_raters, 1]))  # topics, cut points
    pairs = n_topics * DETAIL_PER_TOPIC
    content = settings["dimension"] == "content"
    shift, noise_sd = (CONTENT_SHIFT, settings["rater_sd"] * CONTENT_NOISE) if content else (0.0, settings["rater_sd"])
    means = np.array([center - effect / 2, center + effect / 2]) + shift
    latent = means[None, :, None] + rng.normal(0.0, settings["prompt_sd"], (n_sim, 2, pairs))
    # pairs are topic-major (short, detailed); a topic's effect is shared by both styles
    topic = np.repeat(structure.normal(0.0, settings["topic_sd"], (n_sim, n_topics)), DETAIL_PER_TOPIC, axis=1)
    latent = latent + topic[:, None, :]
    if settings["topic_style_sd"] > 0:  # its own stream, so that the other draws stay as they were
        cells = np.random.default_rng(np.random.SeedSequence([seed, n_topics, n_raters, 2]))
        latent = latent + np.repeat(cells.normal(0.0, settings["topic_style_sd"], (n_sim, 2, n_topics)),
                                    DETAIL_PER_TOPIC, axis=2)
    answers = latent[..., None] + rng.normal(0.0, noise_sd, (n_sim, 2, pairs, n_raters))
    cuts = np.sort(CUTPOINTS + structure.normal(0.0, settings["rater_threshold_sd"],
                                                (n_sim, n_raters, len(CUTPOINTS))), axis=-1)
    scores = SCORE_MIN + (answers[..., None] >= cuts[:, None, None, :, :]).sum(axis=-1).astype(float)
    panel = np.median(scores, axis=-1) if aggregate == "median" else scores.mean(axis=-1)
    # the analysis' unit: one value per topic and style, the mean of its short and detailed panels
    topic_means = panel.reshape(n_sim, 2, n_topics, DETAIL_PER_TOPIC).mean(axis=-1)
    p = _paired_pvalues(topic_means[:, 0, :], topic_means[:, 1, :])
    hits = int(np.sum(p * correction_family < alpha))
    low, high = wilson_interval(hits, n_sim)
    row = {"contrast": f"{a} vs {b}", **{c: settings[c] for c in POWER_COLUMNS[1:7]}, "power": hits / n_sim,
           "power_ci_low": low, "power_ci_high": high, "power_unadjusted": float(np.mean(p < alpha)),
           "power_wilcoxon": np.nan, "power_wilcoxon_unadjusted": np.nan, "n_not_tested": 0, "method": "wilcoxon"}
    out = pd.DataFrame([row], columns=POWER_COLUMNS)
    out.attrs["power"] = {**settings, "method": "wilcoxon", "aggregate": aggregate,
                          "correction_family": correction_family,
                          "correction": f"Holm over {correction_family} tests, first step (p * {correction_family} < alpha)"
                          if correction_family > 1 else "none", "test": _test_name()}
    return out


def power_curve(n_topics=(5, 10, 17, 34), n_raters=(1, 3, 5), target: float = 0.8, **kw) -> pd.DataFrame:
    """:func:`power` over a grid of numbers of topics and raters, and the design that reaches ``target``.

    The planning question: how many topics, with how many raters, give the declared analysis
    ``target`` power? Each grid cell is one :func:`power` call (same keywords ``kw``; the
    primary analysis by default, so a cell of 100 studies takes half a minute to a minute, the
    default grid of 12 cells 5 to 15 minutes on one core: pass ``n_jobs``).

    Returns
    -------
    DataFrame
        One row per (n_topics, n_raters), :func:`power`'s columns plus ``reaches_target``
        (power >= target). ``attrs["needed"]``: n_raters -> the smallest number of topics of
        the grid from which every larger one reaches ``target`` (None if none does);
        ``attrs["summary"]``: that, as a sentence; ``attrs["target"]``.

    Examples
    --------
    >>> curve = power_curve(n_topics=(5, 10), n_raters=(3,), effect=1.5, n_sim=30, correction_family=1,
    ...                     method='wilcoxon', topic_style_sd=0)
    >>> print(curve[['n_topics', 'n_raters', 'power', 'reaches_target']].round(3).to_string(index=False))
     n_topics  n_raters  power  reaches_target
            5         3    0.0           False
           10         3    1.0            True
    >>> curve.attrs['needed']
    {3: 10}
    >>> print(curve.attrs['summary'])
    For 80% power (xray vs photo, style, latent effect 1.5, wilcoxon): 3 raters need 10 topics (of 5, 10; 30 simulated studies per cell).
    """
    if not 0 < target < 1:
        raise RatingError(f"target is a power between 0 and 1, not {target}")
    n_topics = [n_topics] if isinstance(n_topics, (int, np.integer)) else list(n_topics)
    n_raters = [n_raters] if isinstance(n_raters, (int, np.integer)) else list(n_raters)
    if not n_topics or not n_raters:
        raise RatingError("power_curve needs at least one number of topics and one of raters")
    rows = [power(n_topics=t, n_raters=r, **kw) for t, r in itertools.product(n_topics, n_raters)]
    out = pd.concat(rows, ignore_index=True)
    out["reaches_target"] = out["power"] >= target
    needed = {}
    for r in n_raters:
        mine = out[out["n_raters"] == r].sort_values("n_topics")
        reach = mine["reaches_target"].to_numpy()
        first = [t for i, t in enumerate(mine["n_topics"]) if reach[i:].all()]
        needed[int(r)] = int(first[0]) if first else None
    first = rows[0].attrs["power"]
    out.attrs["power"] = dict(first)
    out.attrs["target"], out.attrs["needed"] = target, needed
    said = [f"{r} rater{'s' if r != 1 else ''} need{'s' if r == 1 else ''} {t} topics" if t is not None
            else f"{r} rater{'s' if r != 1 else ''} do{'es' if r == 1 else ''} not reach it within {max(n_topics)} topics"
            for r, t in needed.items()]
    contrast = " vs ".join(first["contrast"])
    grid = ", ".join(str(t) for t in sorted(set(n_topics)))
    out.attrs["summary"] = (f"For {target:.0%} power ({contrast}, {first['dimension']}, latent effect {first['effect']:g}, "
                            f"{_method_words(first)}): {'; '.join(said)} (of {grid}; {first['n_sim']} simulated "
                            "studies per cell).")
    return out


def _method_words(settings: dict) -> str:
    if settings["method"] == "wilcoxon":
        return "wilcoxon"
    family = settings.get("family") or "every style pair"
    return (f"primary analysis, {settings['correction']} over {family}" if settings["correction"] != "none"
            else "primary analysis, the contrast alone")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    Parameters
    ----------
    successes, n : int
        Detections and simulated studies.
    confidence : float
        Coverage of the interval.

    Returns
    -------
    tuple of float
        (low, high), within [0, 1].

    References
    ----------
    Wilson, E. B. (1927). Probable inference, the law of succession, and statistical inference.
    JASA 22(158), 209-212.

    Examples
    --------
    >>> low, high = wilson_interval(45, 50)
    >>> print(round(low, 3), round(high, 3))
    0.786 0.957
    """
    from scipy.stats import norm

    z = norm.ppf(0.5 + confidence / 2)
    share = successes / n
    middle = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, middle - half), min(1.0, middle + half)


def _paired_pvalues(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Two-sided paired Wilcoxon p-value of each row, by the analysis' own rule.

    :func:`ratings.analysis.stats.signed_rank_pvalue`: zeros dropped, exact (sign-flip distribution,
    ties included) up to ``stats.EXACT_MAX`` non-zero differences, asymptotic above; rows
    whose pairs all tie count as p = 1.
    """
    from . import stats

    diff = np.asarray(x, float) - np.asarray(y, float)
    return np.array([stats.signed_rank_pvalue(row)[1] for row in diff])


def _test_name() -> str:
    from . import stats

    return (f"Wilcoxon signed-rank on topic means (ratings.analysis.stats.signed_rank_pvalue: exact up to "
            f"{stats.EXACT_MAX} non-zero differences)")


# --- side-by-side comparisons ------------------------------------------------------------------

# The paired design (ratings.analysis.compare): no comparison study has been run yet, so these
# defaults are stated assumptions, chosen to be moderate, not estimates.
COMPARISON_PROMPT_SD = 1.0  # logit SD of a prompt's own preference between two presets, shared by its raters
COMPARISON_TOPIC_SD = 0.5  # logit SD of a topic's quality (shared by its prompts): both good vs both poor
COMPARISON_QUALITY_SD = 0.8  # logit SD of a prompt's own quality (both good vs both poor)
POSITION_BIAS = 0.55  # share of decisive answers for the left side when both sides are equally good
TIE_RATE = 0.3  # share of answers that are ties (both good or both poor)
GOOD_SHARE = 0.5  # share of ties that are "both good" at average quality
RATER_TIE_SD = 0.4  # logit SD of a rater's own propensity to answer a tie
RATER_LENIENCY_SD = 0.4  # logit SD of a rater's own leaning to "both good" over "both poor"
RATER_POSITION_SD = 0.2  # logit SD of a rater's own lean to one side, around the position bias
COMPARISON_DIMENSIONS = ("style", "content")
_COMPARISON_STREAMS = ("pairs", "prompts", "topics", "raters", "sides", "ties", "choices", "missing", "nonsensical",
                       "seconds", "order", "repeats")


@functools.lru_cache(maxsize=1)
def _normal_nodes() -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights (60) for the mean over a standard normal."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    return nodes, weights / weights.sum()


def planted_log_odds(preference: float, sd: float, position_log_odds: float = 0.0, position_sd: float = 0.0) -> float:
    """The log-odds mu at which the first preset wins a share ``preference`` of decisive answers on average.

    Averaged over each prompt's own preference (normal, SD ``sd`` on the logit scale) and over the
    side it is shown on (half the time on the left, where a rater's lean ``position_log_odds`` +
    N(0, ``position_sd``) adds to it, half on the right, where it subtracts): the mean of
    ``expit(mu + Z)`` over those is ``preference`` (Gauss-Hermite quadrature, 60 nodes).

    Examples
    --------
    >>> planted_log_odds(0.5, 0.7)
    0.0
    >>> round(planted_log_odds(0.65, 0.0), 4), round(float(np.log(0.65 / 0.35)), 4)
    (0.619, 0.619)
    >>> round(planted_log_odds(0.65, 1.0), 3)  # prompts that differ need a larger mean for the same share
    0.746
    """
    if not 0 < preference < 1:
        raise RatingError(f"preference is the share of decisive answers the first preset wins, between 0 and 1 "
                          f"(0.5: no preference), not {preference}")
    if preference == 0.5:
        return 0.0
    from scipy.optimize import brentq

    nodes, weights = _normal_nodes()
    spread = math.sqrt(sd ** 2 + position_sd ** 2) * nodes

    def share(mu):
        return float(np.sum(weights * 0.5 * (_expit(mu + position_log_odds + spread)
                                             + _expit(mu - position_log_odds + spread)))) - preference

    return round(float(brentq(share, -30, 30, xtol=1e-12)), 12)


def simulate_comparisons(catalog: str | Path | pd.DataFrame = "oncology", presets=("glide-clip", "glide-cfg"),
                         raters=("R1", "R2", "R3"), preference: float | dict = 0.5,
                         prompt_sd: float = COMPARISON_PROMPT_SD, topic_sd: float = COMPARISON_TOPIC_SD,
                         quality_sd: float = COMPARISON_QUALITY_SD, topic_preference_sd: float = 0.0,
                         rater_preference_sd: float = 0.0, position_bias: float = POSITION_BIAS,
                         rater_position_sd: float = RATER_POSITION_SD, tie_rate: float = TIE_RATE,
                         good_share: float = GOOD_SHARE, rater_tie_sd: float = RATER_TIE_SD,
                         rater_leniency_sd: float = RATER_LENIENCY_SD, nonsensical_rate: float = 0.02,
                         missing_rate: float = 0.0, repeats: float = 0.0, seed: int = 0,
                         dimensions=COMPARISON_DIMENSIONS) -> pd.DataFrame:
    """A comparisons table of simulated raters answering side-by-side comparisons of presets.

    Every prompt is compared for every pair of presets (balanced: each preset meets each other
    on every prompt), and every rater answers every comparison once (a share ``repeats`` twice),
    in their own random order, with the sides randomised for each showing. Per dimension an
    answer is first a tie or not: a tie with probability ``tie_rate`` (moved on the logit scale
    by the rater's own tie propensity, SD ``rater_tie_sd``), "both good" rather than "both poor"
    with probability ``good_share`` moved by the topic's quality (``topic_sd``), the prompt's own
    (``quality_sd``) and the rater's leniency (``rater_leniency_sd``). A decisive answer picks the
    left side with probability expit(eta_left - eta_right + lambda_r) (so ``position_bias`` is the
    left share where both sides are equally good; over prompts that differ, the observed left share
    is closer to 1/2): eta is the preset's
    strength (the first preset ``mu`` above the others, :func:`planted_log_odds`) plus the
    prompt's own preference (SD ``prompt_sd`` for the difference of two presets, shared by all
    raters, correlated 0.7 between style and content), plus optional topic-level
    (``topic_preference_sd``) and rater-level (``rater_preference_sd``) preferences; lambda_r is
    the position bias (``logit(position_bias)``) plus the rater's own lean (``rater_position_sd``).

    Parameters
    ----------
    catalog : str, Path or DataFrame
        A catalog name or a prompt table, as in :func:`simulate_ratings`.
    presets : sequence of str
        Two or more presets; the first is the one ``preference`` favours.
    raters : sequence of str
        Rater ids; ``sim-`` is put in front of each.
    preference : float or dict
        Share of decisive answers the first preset wins against each other preset, on average
        over prompts, sides and raters (0.5: no preference); a dict gives it per dimension.
    prompt_sd, topic_preference_sd, rater_preference_sd : float
        Logit SDs of a prompt's, a topic's and a rater's own preference between two presets.
        A topic or rater preference makes prompts of one topic, or all prompts of one rater,
        lean together: the sign test's null (prompts independent, these raters without a
        preference) then no longer holds; both default to 0.
    topic_sd, quality_sd : float
        Logit SDs of a topic's and a prompt's quality (both good vs both poor).
    position_bias : float
        Share of decisive answers for the left side where the two sides are equally good.
    rater_position_sd, rater_tie_sd, rater_leniency_sd : float
        Logit SDs of each rater's own lean to one side, propensity to tie and to "both good".
    tie_rate, good_share : float
        Share of ties, and share of ties that are both good, at average quality.
    nonsensical_rate : float
        Share of panels (each side of a showing) flagged nonsensical.
    missing_rate : float
        Share of (showing, dimension) answers left empty (choice NA).
    repeats : float
        Share of comparisons each rater is shown a second time (``repeat`` = 1, fresh answers).
    seed : int
        Everything, comparison ids included, is a function of the parameters and the seed.
    dimensions : sequence of str
        The dimensions answered.

    Returns
    -------
    DataFrame
        The columns of :data:`ratings.analysis.compare.COMPARISON_COLUMNS`, one row per (rater,
        showing, dimension); raters ``sim-...``, comment "simulated", ``attrs["simulated"]`` True
        and ``attrs["simulation"]`` the parameters (``log_odds``: the planted mu).

    Examples
    --------
    >>> table = simulate_comparisons('oncology', preference=0.65, seed=0)
    >>> len(table), table['pair'].nunique(), table['rater'].unique().tolist()
    (1632, 272, ['sim-R1', 'sim-R2', 'sim-R3'])
    >>> print(table[['rater', 'preset_a', 'preset_b', 'left', 'dimension', 'choice', 'winner']].head(4).to_string(index=False))
     rater  preset_a   preset_b       left dimension choice     winner
    sim-R1 glide-cfg glide-clip glide-clip     style   left glide-clip
    sim-R1 glide-cfg glide-clip glide-clip   content  right  glide-cfg
    sim-R1 glide-cfg glide-clip  glide-cfg     style  right glide-clip
    sim-R1 glide-cfg glide-clip  glide-cfg   content   left  glide-cfg
    >>> table.attrs['simulated'], round(table.attrs['simulation']['log_odds']['style'], 3)
    (True, 0.755)
    """
    from .compare import COMPARISON_COLUMNS

    prompts, catalog_name = _prompt_table(catalog, 1)
    presets = distinct_names(presets, "presets")
    if len(presets) < 2:
        raise RatingError(f"a side-by-side comparison needs two presets or more, not {presets}")
    rater_ids = [_sim_id(r) for r in distinct_names(raters, "raters")]
    dimensions = distinct_names(dimensions, "dimensions")
    for value, name in ((nonsensical_rate, "nonsensical_rate"), (missing_rate, "missing_rate"),
                        (repeats, "repeats")):
        check_share(value, name)
    for value, name in ((position_bias, "position_bias"), (tie_rate, "tie_rate"), (good_share, "good_share")):
        if not 0 < value < 1:
            raise RatingError(f"{name} is a share strictly between 0 and 1, not {value}")
    for value, name in ((prompt_sd, "prompt_sd"), (topic_sd, "topic_sd"), (quality_sd, "quality_sd"),
                        (topic_preference_sd, "topic_preference_sd"), (rater_preference_sd, "rater_preference_sd"),
                        (rater_position_sd, "rater_position_sd"), (rater_tie_sd, "rater_tie_sd"),
                        (rater_leniency_sd, "rater_leniency_sd")):
        check_sd(value, name)
    shares = preference if isinstance(preference, dict) else {d: preference for d in dimensions}
    unknown = sorted(set(shares) - set(dimensions))
    if unknown or set(dimensions) - set(shares):
        raise RatingError(f"preference gives dimensions {sorted(shares)}; give one share for each of "
                          f"{', '.join(dimensions)}")
    position = float(_logit(np.array(position_bias)))
    spread = math.sqrt(prompt_sd ** 2 + topic_preference_sd ** 2 + rater_preference_sd ** 2)
    mu = {d: planted_log_odds(float(shares[d]), spread, position, rater_position_sd) for d in dimensions}
    rng = dict(zip(_COMPARISON_STREAMS, (np.random.default_rng(s) for s in
                                         np.random.SeedSequence(seed).spawn(len(_COMPARISON_STREAMS))), strict=True))
    n_prompts, n_presets, n_raters, n_dims = len(prompts), len(presets), len(rater_ids), len(dimensions)
    topic_codes, topics = pd.factorize(prompts["topic"])

    # strengths per (prompt, preset, dimension): each preset's own share of the prompt's preference
    def correlated(rng_, size, sd):
        if sd == 0 or n_dims == 0:
            return np.zeros((*size, n_dims))
        base = rng_.standard_normal((*size, n_dims))
        shared = rng_.standard_normal((*size, 1))
        mix = math.sqrt(PROMPT_CORRELATION)
        return sd / math.sqrt(2) * (mix * shared + math.sqrt(1 - PROMPT_CORRELATION) * base)

    strength = np.zeros((n_prompts, n_presets, n_dims))
    strength[:, 0, :] = np.array([mu[d] for d in dimensions])
    strength = strength + correlated(rng["prompts"], (n_prompts, n_presets), prompt_sd)
    strength = strength + correlated(rng["topics"], (len(topics), n_presets), topic_preference_sd)[topic_codes]
    rater_strength = correlated(rng["raters"], (n_raters, n_presets), rater_preference_sd)
    quality = (rng["topics"].normal(0, topic_sd, len(topics))[topic_codes]
               + rng["prompts"].normal(0, quality_sd, n_prompts))
    rater_tie = rng["raters"].normal(0, rater_tie_sd, n_raters)
    rater_leniency = rng["raters"].normal(0, rater_leniency_sd, n_raters)
    rater_lean = position + rng["raters"].normal(0, rater_position_sd, n_raters)

    # comparisons: prompt-major, then every pair of presets (alphabetical within the pair)
    pairs = [tuple(sorted((p, q))) for p, q in itertools.combinations(presets, 2)]
    index = {p: n for n, p in enumerate(presets)}
    n_pairs = len(pairs)
    cmp_prompt = np.repeat(np.arange(n_prompts), n_pairs)
    cmp_a = np.tile([index[a] for a, _ in pairs], n_prompts)
    cmp_b = np.tile([index[b] for _, b in pairs], n_prompts)
    shown = _showings(n_raters, len(cmp_prompt), repeats, {"order": rng["order"], "repeats": rng["repeats"]})
    r, c = shown["rater"], shown["panel"]
    n_show = len(c)
    a_left = rng["sides"].random(n_show) < 0.5
    left = np.where(a_left, cmp_a[c], cmp_b[c])
    right = np.where(a_left, cmp_b[c], cmp_a[c])
    p_of = cmp_prompt[c]
    eta = (strength[p_of, left, :] - strength[p_of, right, :]
           + rater_strength[r, left, :] - rater_strength[r, right, :] + rater_lean[r][:, None])
    tie = rng["ties"].random((n_show, n_dims)) < _expit(_logit(np.array(tie_rate)) + rater_tie[r])[:, None]
    good = rng["ties"].random((n_show, n_dims)) < _expit(_logit(np.array(good_share)) + quality[p_of]
                                                         + rater_leniency[r])[:, None]
    left_wins = rng["choices"].random((n_show, n_dims)) < _expit(eta)
    choice = np.where(tie, np.where(good, "both_good", "both_poor"), np.where(left_wins, "left", "right")).astype(object)
    choice[rng["missing"].random((n_show, n_dims)) < missing_rate] = None
    left_name, right_name = np.asarray(presets, object)[left], np.asarray(presets, object)[right]
    winner = np.where(choice == "left", left_name[:, None], np.where(choice == "right", right_name[:, None], choice))
    flags = rng["nonsensical"].random((n_show, 2)) < nonsensical_rate
    seconds = np.round(rng["seconds"].lognormal(math.log(2 * SECONDS_MEDIAN), SECONDS_LOG_SD, n_show), 1)
    stamps = np.asarray(_timestamps(seconds, r, n_raters), dtype=object)
    ids = _panel_ids(rng["pairs"], len(cmp_prompt))

    row_show = np.repeat(np.arange(n_show), n_dims)  # one row per (showing, dimension)
    row_dim = np.tile(np.arange(n_dims), n_show)
    table = {"rater": _take(rater_ids, r[row_show]), "pair": _take(ids, c[row_show])}
    for column in PROMPT_TEXT_COLUMNS:
        table[column] = _take(prompts[column], p_of[row_show])
    names = np.asarray(presets, object)
    table.update({
        "preset_a": _take(names, cmp_a[c][row_show]), "preset_b": _take(names, cmp_b[c][row_show]),
        "left": _take(names, left[row_show]), "right": _take(names, right[row_show]),
        "dimension": _take(dimensions, row_dim),
        "choice": pd.array(choice[row_show, row_dim], dtype="str"),
        "winner": pd.array(winner[row_show, row_dim], dtype="str"),
        "nonsensical_left": flags[row_show, 0], "nonsensical_right": flags[row_show, 1],
        "comment": _take([SIM_COMMENT], np.zeros(len(row_show), dtype=np.int64)),
        "seconds": seconds[row_show], "rated_at": _take(stamps, row_show), "repeat": shown["repeat"][row_show],
    })
    df = pd.DataFrame(table, columns=COMPARISON_COLUMNS)
    df.attrs["simulated"] = True
    df.attrs["simulation"] = {
        "catalog": catalog_name, "prompts": n_prompts, "presets": list(presets), "raters": rater_ids,
        "preference": {d: float(shares[d]) for d in dimensions}, "log_odds": mu, "prompt_sd": prompt_sd,
        "topic_sd": topic_sd, "quality_sd": quality_sd, "topic_preference_sd": topic_preference_sd,
        "rater_preference_sd": rater_preference_sd, "position_bias": position_bias,
        "rater_position_sd": rater_position_sd, "tie_rate": tie_rate, "good_share": good_share,
        "rater_tie_sd": rater_tie_sd, "rater_leniency_sd": rater_leniency_sd, "nonsensical_rate": nonsensical_rate,
        "missing_rate": missing_rate, "repeats": repeats, "seed": seed, "dimensions": list(dimensions)}
    return df


COMPARISON_POWER_COLUMNS = ["n_topics", "n_prompts", "n_raters", "preference", "dimension", "alpha", "n_sim",
                            "power", "power_ci_low", "power_ci_high", "power_unadjusted", "decisive_prompts",
                            "test"]


def comparison_power(n_topics=17, n_raters=3, preference: float = 0.6, dimension: str = "style",
                     alpha: float = 0.05, correction: str = "holm", n_sim: int = 200, seed: int = 0,
                     catalog="oncology", presets=("glide-clip", "glide-cfg"), target: float = 0.8,
                     **simulation) -> pd.DataFrame:
    """Power of the declared side-by-side test to find a preference, by simulating studies.

    Each simulated study is :func:`simulate_comparisons` on the catalog's design cut (or
    repeated) to ``n_topics`` topics (every style and detail of each: 16 prompts a topic for
    oncology), every comparison answered by ``n_raters`` raters, the first preset winning a
    share ``preference`` of the decisive answers on average (in every dimension); other
    keywords (``simulation``) go to :func:`simulate_comparisons`. Each study is analysed by the
    declared test, :func:`ratings.analysis.compare.sign_tests` (the prompt-level exact sign test,
    every preset pair x dimension one family adjusted by ``correction``); a detection is the
    pair's ``p_adj < alpha`` in ``dimension`` with the first preset preferred.

    Parameters
    ----------
    n_topics, n_raters : int or sequence of int
        Topics and raters per study; sequences give a grid, one row per cell.
    preference : float
        The planted share (0.6: a 60/40 preference).
    dimension : str
        The dimension whose detection is counted.
    alpha, correction
        The family's level and adjustment.
    n_sim : int
        Simulated studies per cell.
    seed : int
        Study ``i`` of a cell has seed ``(seed, n_topics, n_raters, i)``.
    catalog, presets
        The design's catalog, and the presets (the first is the preferred one).
    target : float
        The power a design should reach: ``attrs["needed"]`` maps each number of raters to the
        fewest topics of the grid from which every larger number reaches it.

    Returns
    -------
    DataFrame
        :data:`COMPARISON_POWER_COLUMNS`: power with its 95% Wilson interval, the unadjusted
        power (p < alpha in the planted direction) and the mean number of decisive prompts;
        ``attrs["needed"]``, ``attrs["seconds"]``.

    Examples
    --------
    >>> out = comparison_power(n_topics=4, n_raters=3, preference=0.6, n_sim=20)
    >>> print(out[['n_prompts', 'n_raters', 'power', 'power_unadjusted']].to_string(index=False))
     n_prompts  n_raters  power  power_unadjusted
            64         3    ...               ...
    """
    import time

    from .compare import sign_tests

    topics_grid = [n_topics] if isinstance(n_topics, (int, np.integer)) else list(n_topics)
    raters_grid = [n_raters] if isinstance(n_raters, (int, np.integer)) else list(n_raters)
    for value, name in [(v, "n_topics") for v in topics_grid] + [(v, "n_raters") for v in raters_grid] + [
            (n_sim, "n_sim")]:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise RatingError(f"{name} must be a whole number of at least 1, not {value!r}")
    if not topics_grid or not raters_grid:
        raise RatingError("comparison_power needs at least one number of topics and one of raters")
    presets = distinct_names(presets, "presets")
    started = time.perf_counter()
    rows = []
    for topics, n_r in itertools.product(topics_grid, raters_grid):
        prompts = design_prompts(int(topics), catalog)
        raters = [f"R{k + 1}" for k in range(int(n_r))]
        detected = unadjusted = 0
        decisive = []
        for i in range(n_sim):
            study_seed = int(np.random.SeedSequence([seed, int(topics), int(n_r), i]).generate_state(1)[0])
            table = simulate_comparisons(prompts, presets=presets, raters=raters, preference=preference,
                                         seed=study_seed, **simulation)
            tests = sign_tests(table, alpha=alpha, correction=correction)
            row = tests[(tests["dimension"] == dimension) & (tests["preset_a"] == min(presets[:2]))
                        & (tests["preset_b"] == max(presets[:2]))].iloc[0]
            first_is_a = presets[0] == row["preset_a"]
            planted = (row["share_a"] > 0.5) == first_is_a
            detected += bool(row["p_adj"] < alpha and planted)
            unadjusted += bool(row["p"] < alpha and planted)
            decisive.append(row["n_decisive_prompts"])
        low, high = wilson_interval(detected, n_sim)
        rows.append({"n_topics": int(topics), "n_prompts": len(prompts), "n_raters": int(n_r),
                     "preference": preference, "dimension": dimension, "alpha": alpha, "n_sim": n_sim,
                     "power": detected / n_sim, "power_ci_low": low, "power_ci_high": high,
                     "power_unadjusted": unadjusted / n_sim, "decisive_prompts": float(np.mean(decisive)),
                     "test": f"prompt-level exact sign test, {correction} over every preset pair x dimension"})
    out = pd.DataFrame(rows, columns=COMPARISON_POWER_COLUMNS)
    needed = {}
    for n_r in raters_grid:
        mine = out[out["n_raters"] == n_r].sort_values("n_topics")
        reach = (mine["power"] >= target).to_numpy()
        first = [t for k, t in enumerate(mine["n_topics"]) if reach[k:].all()]
        needed[int(n_r)] = int(first[0]) if first else None
    out.attrs.update(needed=needed, target=target, seconds=round(time.perf_counter() - started, 1),
                     simulated=True)
    return out


# --- helpers --------------------------------------------------------------------------------

def _prompt_table(catalog, replicate: int) -> tuple[pd.DataFrame, str]:
    if isinstance(catalog, pd.DataFrame):
        missing = [c for c in PROMPT_TEXT_COLUMNS if c not in catalog.columns]
        if missing:
            raise RatingError(f"the prompt table misses columns {', '.join(missing)}; pass a table made by "
                              "probes.catalog.expand or a catalog name such as 'oncology'")
        prompts = catalog.reset_index(drop=True)
        name = str(prompts["catalog"].iloc[0]) if "catalog" in prompts and len(prompts) else "table"
    else:
        catalog_obj = cat.load_catalog(catalog)
        prompts, name = cat.expand(catalog_obj), catalog_obj.name
    if prompts.empty:
        raise RatingError("the prompt table is empty; nothing to simulate")
    if not isinstance(replicate, (int, np.integer)) or isinstance(replicate, bool) or replicate < 1:
        raise RatingError(f"replicate must be a whole number of at least 1, not {replicate!r}")
    if replicate > 1:
        # built as plain lists: a thousand pandas string concatenations would dominate a benchmark
        suffixes = [""] + [f"~{k}" for k in range(2, replicate + 1)]
        base = prompts
        prompts = base.iloc[np.tile(np.arange(len(base)), replicate)].reset_index(drop=True)
        for column in ("prompt_id", "topic"):
            values = base[column].tolist()
            prompts[column] = pd.array([v + suffix for suffix in suffixes for v in values], dtype="str")
    return prompts, name


def distinct_names(values, what: str) -> list[str]:
    """``values`` (one name or a sequence) as a list of texts; :class:`RatingError` if empty or a name repeats.

    Examples
    --------
    >>> distinct_names('R1', 'raters')
    ['R1']
    >>> distinct_names(['R1', 2], 'raters')
    ['R1', '2']
    """
    names = [values] if isinstance(values, str) else [str(v) for v in values]
    if not names:
        raise RatingError(f"no {what} given; name at least one")
    if len(set(names)) != len(names):
        raise RatingError(f"{what} {names} name one twice; give each once")
    return names


def check_share(value: float, name: str) -> None:
    """:class:`RatingError` naming ``name`` unless ``value`` is a share between 0 and 1.

    Examples
    --------
    >>> check_share(0.1, 'repeats')
    >>> check_share(1.5, 'repeats')
    Traceback (most recent call last):
    ...
    ratings.errors.RatingError: repeats is a share between 0 and 1, not 1.5
    """
    if not 0 <= value <= 1:
        raise RatingError(f"{name} is a share between 0 and 1, not {value}")


def check_sd(value: float, name: str) -> None:
    """:class:`RatingError` naming ``name`` unless ``value`` is a standard deviation (0 or more).

    Examples
    --------
    >>> check_sd(0.5, 'rater_sd')
    >>> check_sd(-1, 'rater_sd')
    Traceback (most recent call last):
    ...
    ratings.errors.RatingError: rater_sd is a standard deviation, 0 or more, not -1
    """
    if not value >= 0:
        raise RatingError(f"{name} is a standard deviation, 0 or more, not {value}")


def latent_style_means(prompts: pd.DataFrame, given: dict | None) -> dict:
    """style -> mean latent quality for the styles of ``prompts``: ``given`` (styles it leaves out at
    :data:`OTHER_MEAN`), or the published pattern (:data:`DEFAULT_STYLE_MEANS`, :data:`GROUP_MEANS`).

    Examples
    --------
    >>> import pandas as pd
    >>> prompts = pd.DataFrame({'prompt_id': ['p1', 'p2', 'p3', 'p4'], 'text': ['a', 'b', 'c', 'd'],
    ...                         'style': ['xray', 'xray', 'photo', 'photo'],
    ...                         'style_group': ['radiology', 'radiology', 'other', 'other'],
    ...                         'topic': ['t1', 't2', 't1', 't2'], 'topic_group': ['g'] * 4,
    ...                         'detail': ['short', 'detailed'] * 2})
    >>> latent_style_means(prompts, None)
    {'xray': 1.0, 'photo': 2.3}
    >>> latent_style_means(prompts, {'xray': 1.5})
    {'xray': 1.5, 'photo': 2.0}
    """
    styles = list(pd.unique(prompts["style"]))
    unknown = sorted(set(given or {}) - set(styles))
    if unknown:
        raise RatingError(f"style_means names style {unknown[0]!r}, which the catalog does not have; its "
                          f"styles are {', '.join(styles)}")
    if given is not None:
        return {s: float(given.get(s, OTHER_MEAN)) for s in styles}
    group = dict(prompts[["style", "style_group"]].drop_duplicates("style").itertuples(index=False))
    return {s: float(DEFAULT_STYLE_MEANS.get(s, GROUP_MEANS.get(group[s], OTHER_MEAN))) for s in styles}


def _keyed(given: dict | None, names: list[str], what: str, of: str) -> dict:
    unknown = sorted(set(given or {}) - set(names))
    if unknown:
        raise RatingError(f"{what} names {unknown[0]!r}, which is not one of the {of} ({', '.join(names)})")
    return {name: float((given or {}).get(name, 0.0)) for name in names}


def _contrast(contrast) -> tuple[str, str]:
    if isinstance(contrast, str) or len(contrast) != 2 or contrast[0] == contrast[1]:
        raise RatingError(f"contrast {contrast!r}: give two different styles, e.g. ('xray', 'photo')")
    return str(contrast[0]), str(contrast[1])


def covariance(sd_a: float, sd_b: float, correlation: float) -> np.ndarray:
    """The 2 x 2 covariance matrix of two normal draws with these SDs and this correlation.

    Examples
    --------
    >>> covariance(1.0, 2.0, 0.5)
    array([[1., 1.],
           [1., 4.]])
    """
    return np.array([[sd_a**2, correlation * sd_a * sd_b], [correlation * sd_a * sd_b, sd_b**2]])


def _score(value: np.ndarray, flagged: np.ndarray, cuts: np.ndarray) -> pd.arrays.IntegerArray:
    """The number of the answer's rater's cut points at or below the value; NA where flagged."""
    whole = SCORE_MIN + (value[:, None] >= cuts).sum(axis=1).astype(np.int64)
    return pd.arrays.IntegerArray(whole, flagged.copy())


def rater_cutpoints(rng: np.random.Generator, bias, sd: float) -> np.ndarray:
    """One row of ordered cut points per rater: rounding's, less the rater's bias, plus their own jitter.

    A bias b moves all cut points down by b, which is the same as adding b to every latent
    value (the old model); the jitter, sorted so that levels keep their order, is what makes
    one rater stingy with 4s and another generous with 1s.

    Examples
    --------
    >>> import numpy as np
    >>> rater_cutpoints(np.random.default_rng(0), [0.0, 0.5], sd=0.0)
    array([[0.5, 1.5, 2.5, 3.5],
           [0. , 1. , 2. , 3. ]])
    """
    bias = np.asarray(bias, float)
    jitter = rng.normal(0.0, sd, (len(bias), len(CUTPOINTS))) if sd > 0 else np.zeros((len(bias), len(CUTPOINTS)))
    return np.sort(CUTPOINTS[None, :] - bias[:, None] + jitter, axis=1)


def _flag_rates(prompts: pd.DataFrame, given: dict | None, default: float) -> dict:
    """style -> flag rate: a style's own key, else its style group's, else ``default``."""
    given = dict(given or {})
    group = dict(prompts[["style", "style_group"]].drop_duplicates("style").itertuples(index=False))
    styles, groups = list(group), list(dict.fromkeys(group.values()))
    unknown = sorted(set(given) - set(styles) - set(groups))
    if unknown:
        raise RatingError(f"flag_rates names {unknown[0]!r}, which is neither a style nor a style group of the "
                          f"catalog; its styles are {', '.join(styles)}, its groups {', '.join(groups)}")
    for key, rate in given.items():
        check_share(rate, f"flag_rates[{key!r}]")
    # a key that names a style is that style (oncology's 'microscopy' is a style and a group)
    by_group = {k: v for k, v in given.items() if k not in group}
    return {s: float(given[s] if s in given else by_group.get(group[s], default)) for s in styles}


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def _expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _take(values, index: np.ndarray):
    return pd.array(np.asarray(values, dtype=object), dtype="str").take(index)


def _panel_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Opaque ids shaped like the session's panel tokens (12 url-safe characters)."""
    raw = base64.urlsafe_b64encode(rng.bytes(9 * n))  # 9 bytes -> exactly 12 characters each
    return np.frombuffer(raw, dtype="S12").astype(str).astype(object)


def _timestamps(seconds: np.ndarray, rater_of: np.ndarray, n_raters: int):
    """Each rater starts at START and answers one panel after another (rows are in rater order)."""
    done = np.cumsum(seconds)
    counts = np.bincount(rater_of, minlength=n_raters)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    before = done[starts] - seconds[starts]  # every rater has at least one showing
    elapsed_ms = np.round((done - np.repeat(before, counts)) * 1000).astype("timedelta64[ms]")
    text = np.datetime_as_string(START + elapsed_ms, unit="ms")
    return pd.array(text, dtype="str") + "Z"


__all__ = ["COMPARISON_DIMENSIONS", "COMPARISON_POWER_COLUMNS", "COMPARISON_PROMPT_SD", "COMPARISON_QUALITY_SD",
           "COMPARISON_TOPIC_SD", "CONTENT_NOISE", "CONTENT_SHIFT", "CUTPOINTS", "DEFAULT_STYLE_MEANS", "FLAG_RATES",
           "GOOD_SHARE", "GROUP_MEANS", "METHODS", "POSITION_BIAS", "RATER_LENIENCY_SD", "RATER_POSITION_SD",
           "RATER_TIE_SD", "TIE_RATE",
           "NOISE_CORRELATION", "N_SIM", "OTHER_FLAG_RATE", "OTHER_MEAN", "RADIOLOGY_FLAG_RATE", "RATER_THRESHOLD_SD",
           "REALISTIC", "SCORE_MAX", "SCORE_MIN", "SECONDS_LOG_SD", "SECONDS_MEDIAN", "SIM_COMMENT", "SIM_PREFIX",
           "STYLE_PAIRS", "TIDY_COLUMNS", "TOPIC_SD", "TOPIC_STYLE_SD", "check_sd", "check_share",
           "comparison_power", "covariance", "design_prompts", "distinct_names", "latent_style_means", "null_study",
           "planted_log_odds", "power", "power_curve", "rater_cutpoints", "simulate_comparisons", "simulate_ratings",
           "wilson_interval"]
