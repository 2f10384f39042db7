"""The study's locked analysis plan (pre-registration): ``python -m ratings plan``.

Before anyone sees the ratings by style, the study team writes down what the analysis will
be: the questions and their estimands, the primary model, how nonsensical flags count, the
declared family of comparisons and its correction, alpha, the radiology contrasts, the
sensitivity analyses, the analysis options and the software that will run it. The plan is one
JSON document; its canonical form (:func:`canonical_json`: sorted keys, no spaces, ASCII) is
what its SHA-256 is of, so anyone holding the printed document can check the hash a registry
holds (``sha256sum`` of the JSON line). :func:`registry_text` prints it to paste into a
registry.

The plan lives in the study database (table ``analysis_plans``, append-only: triggers refuse
UPDATE and DELETE), with who wrote it and when (UTC); each write is an audit event too
(``plan``, ``plan_amendment``; ``python -m ratings audit``). Until the study's first export or
analysis (the audit trail's ``export`` and ``analysis`` events: the first moment anyone can
see ratings by style) the plan may be replaced, and the replacement is recorded. After that
it changes only by a dated amendment with its reason (``--amend "reason"``): the original and
every amendment stay, in order, each with its own SHA-256.

``python -m ratings analyze --study DIR`` follows the plan in force (:func:`follow_plan`):
options not given on the command line come from it, options given that differ from it are
deviations, named in the report by :func:`plan_statement`.

Examples
--------
>>> document = {"alpha": 0.05, "question": "radiology lower?"}
>>> canonical_json(document)
'{"alpha":0.05,"question":"radiology lower?"}'
>>> plan_sha256(document)[:12]
'd47d75cb3295'
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shlex
import sqlite3
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from probes.store import now, transaction

from .access import actor
from .db import get_config, open_db, raters
from .errors import RatingError
from .scale import DEFAULT_SCALE

__all__ = ["FORMAT", "OPTIONS", "FLAGS", "Plan", "PlanEntry", "Written", "canonical_json", "check_options",
           "comparison_plan", "current_plan", "default_options", "follow_plan", "notebook_plan", "plan_document", "plan_history",
           "plan_sha256", "plan_statement", "registry_text", "software_versions", "unblinded", "write_plan"]

FORMAT = "medprobe analysis plan 1"
# the analysis options a plan fixes, as protocol.analyze names them, with their command-line flags
FLAGS = {"aggregate": "--aggregate", "nonsensical": "--nonsensical", "correction": "--correction",
         "alpha": "--alpha", "n_boot": "--n-boot", "n_perm": "--n-perm", "seed": "--seed"}
OPTIONS = tuple(FLAGS)
CORRECTIONS = {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg (false discovery rate)", "bonferroni": "Bonferroni"}
UNBLINDING = ("export", "analysis")  # audit events after which the ratings by style have been seen
EVENT = {"plan": "plan", "replacement": "plan", "amendment": "plan_amendment"}
PACKAGES = ("numpy", "pandas", "scipy", "statsmodels")


# --- the plan document ------------------------------------------------------------------------

def canonical_json(document: dict) -> str:
    """The one text a plan's SHA-256 is of: sorted keys, no spaces, ASCII only.

    Examples
    --------
    >>> canonical_json({"b": [1, 2], "a": "é"})
    '{"a":"\\\\u00e9","b":[1,2]}'
    """
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def plan_sha256(document: dict) -> str:
    """SHA-256 (hex) of :func:`canonical_json` of ``document`` as UTF-8 bytes."""
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


def default_options() -> dict:
    """The analysis options of a plan that names none: ``protocol.analyze``'s own defaults.

    Examples
    --------
    >>> sorted(default_options())
    ['aggregate', 'alpha', 'correction', 'n_boot', 'n_perm', 'nonsensical', 'seed']
    """
    from .analysis.protocol import analyze

    parameters = inspect.signature(analyze).parameters
    return {name: parameters[name].default for name in OPTIONS}


def check_options(options: dict) -> dict:
    """``options`` checked (every name one of :data:`OPTIONS`, every value valid), as a new dict.

    Examples
    --------
    >>> check_options({"alpha": 0.01, "n_boot": 500})
    {'alpha': 0.01, 'n_boot': 500}
    >>> check_options({"alpha": 5})
    Traceback (most recent call last):
    ...
    ratings.errors.RatingError: --alpha 5: give a level between 0 and 1, e.g. 0.05
    """
    from .analysis.stats import AGGREGATES, POLICIES

    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise RatingError(f"unknown analysis option {unknown[0]!r}; a plan fixes {', '.join(OPTIONS)}")
    choices = {"aggregate": AGGREGATES, "nonsensical": POLICIES, "correction": tuple(CORRECTIONS)}
    out = {}
    for name, value in options.items():
        flag = FLAGS[name]
        if name in choices and value not in choices[name]:
            raise RatingError(f"{flag} {value}: choose one of {', '.join(choices[name])}")
        if name == "alpha":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise RatingError(f"{flag} {value}: give a level between 0 and 1, e.g. 0.05")
            value = float(value)
        if name in ("n_boot", "n_perm", "seed"):
            if isinstance(value, bool) or not isinstance(value, int) or (value < 0 and name != "seed"):
                raise RatingError(f"{flag} {value}: give a whole number" + (" (0 or more)" if name != "seed" else ""))
        out[name] = value
    return out


def software_versions() -> dict:
    """What will run the analysis: medprobe's version and git commit (None outside a git
    checkout; ``modified`` says whether its tracked files differ from that commit), Python,
    numpy, pandas, scipy and statsmodels."""
    import platform

    versions = {"medprobe": _version("medprobe"), "python": platform.python_version()}
    versions.update({name: _version(name) for name in PACKAGES})
    root = Path(__file__).resolve().parents[1]
    versions["commit"], versions["modified"] = None, None
    if (root / ".git").exists():
        try:
            commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                    timeout=10)
            status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return versions
        if commit.returncode == 0 and commit.stdout.strip():
            versions["commit"] = commit.stdout.strip()
            versions["modified"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    return versions


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def plan_document(options: dict | None = None, design: dict | None = None, software: dict | None = None) -> dict:
    """The analysis plan as one JSON-able document: what :func:`write_plan` stores and hashes.

    ``options``: analysis options (the others from :func:`default_options`); ``design``: the
    study as planned (:func:`study_design`: dimensions, styles and their groups, presets,
    raters); ``software``: :func:`software_versions` (read here when not given).

    Examples
    --------
    >>> design = {"dimensions": [{"id": "style", "min": 0, "max": 4}], "presets": ["cfg"], "raters": ["A", "B"],
    ...           "styles": [{"style": "xray", "group": "radiology"}, {"style": "photo", "group": "other"},
    ...                      {"style": "poster", "group": "other"}]}
    >>> document = plan_document({"alpha": 0.01}, design, software={"medprobe": "0.1.0"})
    >>> document["family"]["pairs_per_dimension"], document["options"]["alpha"]
    (3, 0.01)
    >>> document["radiology"]["pairs"]
    [['xray', 'photo'], ['xray', 'poster']]
    """
    options = check_options({**default_options(), **(options or {})})
    design = design or {"dimensions": [], "styles": [], "presets": [], "raters": []}
    styles = [s["style"] for s in design["styles"]]
    radiology = [s["style"] for s in design["styles"] if s.get("group") == "radiology"]
    radiology = radiology if len(radiology) < len(styles) else []
    others = [s for s in styles if s not in radiology]
    alpha, correction = options["alpha"], CORRECTIONS[options["correction"]]
    k = len(styles)
    return {
        "format": FORMAT,
        "study": design,
        "questions": [
            {"part": "a", "question": "How often is each style's panel flagged nonsensical?",
             "estimand": "the odds that a rater flags a panel of a style nonsensical, each style against the "
                         "reference style and radiology styles against all other styles (odds ratios)",
             "model": "Firth-penalised logistic regression of the flag on style (+ rater), first showings, "
                      "standard errors clustered by topic (CR1, t with G - 1 df)"},
            {"part": "b", "question": "How are the styles rated among the answers that were not flagged?",
             "estimand": "per scored dimension, the cumulative log odds ratio of a higher rating between two "
                         "styles, among each rater's own unflagged answers (a rater's flag removes that "
                         "rater's answer only)",
             "model": "cumulative-logit (proportional odds) model of each rater's own unflagged answers on "
                      "style + detail + preset + rater, standard errors clustered by topic"},
            {"part": "composite", "question": "How are the styles rated when a flag counts as the worst "
                                              "answer?",
             "estimand": "the same cumulative log odds ratios with a flag as its own category below the "
                         "scale's lowest (each rater's own flag only)",
             "model": "the part (b) model on every first-showing answer, a flag as the lowest category"},
        ],
        "primary_model": "Part (a): the Firth logistic flag model. Part (b): the cumulative-logit model of "
                         "each rater's own unflagged answers on style + detail + preset + rater, clustered by "
                         "topic, fitted by maximum likelihood (BFGS). The composite estimand is shown beside "
                         "them with that wording.",
        "flags": "A nonsensical flag is its own outcome (part a). In part (b) a rater's flag removes that "
                 "rater's answer only; no rater's flag changes another rater's answer. The composite counts "
                 "a flag as the lowest category. The published study's rule (panel-zero: a panel flagged by "
                 "any rater scores 0 for every rater) is a sensitivity analysis only. Rank tests, "
                 f"descriptives and shares use nonsensical={options['nonsensical']}.",
        "family": {"definition": "per scored dimension, every pair of styles is one family",
                   "pairs_per_dimension": k * (k - 1) // 2, "correction": options["correction"],
                   "text": f"Every pair of the {k} styles per dimension ({k * (k - 1) // 2} pairs) is one "
                           f"family, adjusted by {correction}; every per-pair label comes from the adjusted "
                           "p-value."},
        "alpha": alpha,
        "radiology": {
            "claim": "radiology styles are rated lower (part b, composite) and flagged more often (part a) "
                     "than every other style",
            "styles": radiology, "pairs": [[r, o] for r in radiology for o in others],
            "test": "intersection-union (Berger 1982): the claim holds when every radiology-vs-other pair has "
                    f"an unadjusted two-sided p < {alpha:g} in the stated direction; the claim's p is the "
                    "largest pair p. Part (a): the flag model's radiology-vs-other odds ratio at the same "
                    "level."},
        "sensitivity": [
            "the composite estimand (a flag as the lowest category)",
            "the ordinal model under each nonsensical rule: zero, panel-zero (the published study's rule), "
            "exclude, lowest",
            "Wilcoxon signed-rank tests on topic means under aggregate {median, none} x nonsensical {zero, "
            "panel-zero, exclude, lowest}; per contrast, which single choice decides the verdict",
            "the published study's analysis reproduced (Kruskal-Wallis on prompt medians, every pair, "
            "uncorrected) when asked for (--reproduce)",
        ],
        "options": options,
        "software": software if software is not None else software_versions(),
        **({"comparisons": comparison_plan(design["compare"]["presets"], len(design["dimensions"]), alpha, correction)}
           if design.get("compare") else {}),
    }


def comparison_plan(presets: list[str], dimensions: int, alpha: float, correction: str) -> dict:
    """The declared claim of a study's side-by-side comparisons (:mod:`ratings.analysis.compare`)."""
    pairs = len(presets) * (len(presets) - 1) // 2
    return {
        "question": "Do raters prefer one preset's panels to the other's, shown side by side for the same prompt?",
        "estimand": "per preset pair and dimension, the share of prompts that go to each preset (a prompt goes to "
                    "the preset its raters chose more often among their left/right-better answers)",
        "test": "exact two-sided sign test (binomial, 1/2) with prompts as the unit; prompts drawn drop out",
        "family": {"size": pairs * dimensions, "correction": correction,
                   "text": f"Every preset pair x dimension ({pairs} x {dimensions}) is one family, adjusted by "
                           f"{correction} at alpha {alpha:g}; labels come from the adjusted p only."},
        "estimates": "Bradley-Terry strengths with Davidson's tie parameter (both good and both poor as ties), "
                     "95% CIs clustered by prompt (and by topic with 5 or more topics); position bias, agreement "
                     "on the choices and the per style-group heterogeneity test are secondary, each its own family",
        "presets": list(presets)}


def _analysis_content(document: dict) -> dict:
    """What decides the analysis: the document without its software versions."""
    return {k: v for k, v in document.items() if k != "software"}


def study_design(conn: sqlite3.Connection) -> dict:
    """The study as the plan declares it: scale dimensions, styles (of the built panels, else of
    the generated prompts) with their groups, presets and raters."""
    scale = get_config(conn, "scale") or DEFAULT_SCALE
    dimensions = [{"id": d["id"], "min": d["min"], "max": d["max"]} for d in scale["dimensions"]]
    styles, presets = [], []
    try:
        for query in ("SELECT DISTINCT pr.style, pr.style_group FROM panels p JOIN prompts pr "
                      "ON pr.prompt_id = p.prompt_id WHERE pr.style IS NOT NULL ORDER BY pr.style",
                      "SELECT DISTINCT style, style_group FROM prompts WHERE style IS NOT NULL ORDER BY style"):
            styles = [{"style": r[0], "group": r[1]} for r in conn.execute(query)]
            if styles:
                break
        presets = [r[0] for r in conn.execute("SELECT DISTINCT preset FROM panels ORDER BY preset")]
    except sqlite3.OperationalError:  # a study without generated prompts (no prompts table)
        pass
    design = {"dimensions": dimensions, "styles": styles, "presets": presets, "raters": raters(conn)}
    compared = get_config(conn, "compare")
    if compared:  # side-by-side comparisons (ratings.compare): their own declared family
        design["compare"] = {"presets": list(compared["presets"]), "pairs_per_prompt": compared.get("pairs_per_prompt")}
    return design


# --- stored plans ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlanEntry:
    """One row of ``analysis_plans``: a plan, a replacement or an amendment."""
    plan_id: int
    kind: str  # plan, replacement, amendment
    written_at: str  # UTC, as the audit trail writes times
    written_by: str  # OS account @ host
    sha256: str
    reason: str | None
    document: dict

    @property
    def date(self) -> str:
        """``YYYY-MM-DD HH:MM UTC``."""
        return utc_date(self.written_at)


@dataclass(frozen=True)
class Plan:
    """The plan in force: the plan as registered (the first, or its latest replacement before
    unblinding) and its amendments in order; the last of them is what the analysis follows."""
    registered: PlanEntry
    amendments: tuple[PlanEntry, ...]
    history: tuple[PlanEntry, ...]  # every row, replaced plans too, oldest first
    unblinded_at: str | None = None  # the study's first export or analysis, if any

    @property
    def latest(self) -> PlanEntry:
        return self.amendments[-1] if self.amendments else self.registered

    @property
    def options(self) -> dict:
        return dict(self.latest.document["options"])


@dataclass(frozen=True)
class Written:
    """What :func:`write_plan` did: ``kind`` is plan, replacement, amendment or unchanged."""
    kind: str
    plan: Plan


def utc_date(stamp: str) -> str:
    """An audit-trail time as ``YYYY-MM-DD HH:MM UTC``.

    Examples
    --------
    >>> utc_date("2026-12-02T06:50:12.345Z")
    '2026-12-02 06:50 UTC'
    """
    return f"{stamp[:10]} {stamp[11:16]} UTC"


def _entries(conn: sqlite3.Connection) -> list[PlanEntry]:
    entries = []
    for row in conn.execute("SELECT plan_id, kind, written_at, written_by, sha256, reason, document "
                            "FROM analysis_plans ORDER BY plan_id"):
        text = row["document"]
        if hashlib.sha256(str(text).encode("utf-8")).hexdigest() != row["sha256"]:
            raise RatingError(f"{_database(conn)}: analysis plan {row['plan_id']} ({row['kind']} of "
                              f"{utc_date(row['written_at'])}) no longer matches its SHA-256 {row['sha256']}: it "
                              "was changed outside medprobe, so the study's plan cannot be trusted. Restore the "
                              "study folder from its backup (keep the damaged copy for the study's records).")
        entries.append(PlanEntry(row["plan_id"], row["kind"], row["written_at"], row["written_by"], row["sha256"],
                                 row["reason"], json.loads(text)))
    return entries


def _database(conn) -> str:
    return conn.execute("PRAGMA database_list").fetchone()[2] or "the study database"


def unblinded(conn: sqlite3.Connection) -> sqlite3.Row | None:
    """The study's first export or analysis (audit event, with ``at``), or None."""
    marks = ", ".join("?" for _ in UNBLINDING)
    return conn.execute(f"SELECT event, at FROM audit WHERE event IN ({marks}) ORDER BY audit_id LIMIT 1",
                        UNBLINDING).fetchone()


def _plan_of(entries: list[PlanEntry], unblinding) -> Plan | None:
    if not entries:
        return None
    base = max(i for i, e in enumerate(entries) if e.kind != "amendment")
    return Plan(entries[base], tuple(entries[base + 1:]), tuple(entries),
                unblinding["at"] if unblinding is not None else None)


def plan_history(study: str | Path) -> list[PlanEntry]:
    """Every plan, replacement and amendment of a study, oldest first (read-only)."""
    conn = open_db(study, readonly=True)
    try:
        return _entries(conn)
    finally:
        conn.close()


def current_plan(study: str | Path) -> Plan | None:
    """The study's plan in force, or None where none was written (read-only: a read-only copy
    of a study can be analysed by its plan)."""
    conn = open_db(study, readonly=True)
    try:
        conn.execute("BEGIN")  # one snapshot
        try:
            return _plan_of(_entries(conn), unblinded(conn))
        finally:
            conn.execute("COMMIT")
    finally:
        conn.close()


def write_plan(study: str | Path, options: dict | None = None, amend: str | None = None,
               by: str | None = None) -> Written:
    """Write the study's analysis plan (or replace it, or amend it) and return the plan in force.

    ``options``: the analysis options to fix; those not given keep the current plan's (the
    defaults of :func:`default_options` for a first plan). ``amend``: the reason of an
    amendment. Until the study's first export or analysis the plan may be replaced (recorded as
    a replacement); after it only an amendment changes it, and a new plan without ``amend`` is
    refused. A plan that decides nothing new (the same document but for software versions)
    writes nothing: ``kind`` is "unchanged"; with ``amend`` it is refused. Each write is one
    transaction: the plan's row and its audit event, or nothing.
    """
    given = check_options(dict(options or {}))
    reason = None if amend is None else " ".join(str(amend).split())
    if amend is not None and not reason:
        raise RatingError('--amend needs the reason of the amendment, e.g. --amend "alpha 0.01: two more '
                          'dimensions were added"; nothing was changed')
    software = software_versions()  # before the write lock: it runs git
    by = by or actor()
    conn = open_db(study)  # refuses a folder that is not a study, links, a read-only study
    try:
        with transaction(conn):
            entries = _entries(conn)
            first = unblinded(conn)
            current = _plan_of(entries, first)
            if current is None and reason is not None:
                raise RatingError(f"{study}: the study has no analysis plan to amend; nothing was changed. Write "
                                  f"the plan first: python -m ratings plan --study {shlex.quote(str(study))} "
                                  "(without --amend)")
            base = {} if current is None else current.options
            document = plan_document({**base, **given}, study_design(conn), software)
            if current is not None and _analysis_content(document) == _analysis_content(current.latest.document):
                if reason is not None:
                    raise RatingError(
                        f"{study}: nothing to amend: the plan in force (sha256 {current.latest.sha256[:12]}, "
                        f"{current.latest.date}) already says this; nothing was written. Give the options "
                        "that change, e.g. --alpha 0.01, with --amend \"reason\"")
                return Written("unchanged", current)
            if current is not None and reason is None and first is not None:
                changed = " ".join(f"{FLAGS[k]} {_value(v)}" for k, v in given.items()) or "OPTIONS"
                where = shlex.quote(str(study))
                raise RatingError(
                    f"{study}: the analysis plan is locked: the study's ratings were unblinded by its first "
                    f"{first['event']} ({utc_date(first['at'])}, audit trail), after the plan (sha256 "
                    f"{current.registered.sha256[:12]}, registered {current.registered.date}) was written, so a "
                    "new plan cannot replace it; nothing was changed. Record the change as a dated amendment "
                    f"with its reason: python -m ratings plan --study {where} {changed} --amend \"why\" (the "
                    "original plan stays on record).")
            kind = "plan" if current is None else ("amendment" if reason is not None else "replacement")
            text = canonical_json(document)
            sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
            stamp = now()
            plan_id = conn.execute("INSERT INTO analysis_plans (kind, written_at, written_by, sha256, reason, "
                                   "document) VALUES (?, ?, ?, ?, ?, ?)",
                                   (kind, stamp, by, sha, reason, text)).lastrowid
            detail = {"plan_id": plan_id, "kind": kind, "sha256": sha, **({"reason": reason} if reason else {}),
                      **({"previous": current.latest.sha256} if current is not None else {}),
                      **({"after": first["event"]} if first is not None else {})}
            # the audit trail's columns as ratings.access writes them, in this same transaction
            conn.execute("INSERT INTO audit (at, event, actor, detail) VALUES (?, ?, ?, ?)",
                         (stamp, EVENT[kind], by, json.dumps(detail, sort_keys=True)))
            written = _plan_of(_entries(conn), first)
    finally:
        conn.close()
    return Written(kind, written)


# --- following the plan ------------------------------------------------------------------------

def _value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def follow_plan(plan: Plan | None, given: dict, defaults: dict, ignore: bool = False) -> tuple[dict, list[str]]:
    """The options an analysis runs with, and its deviations from the plan.

    ``given``: the options given on the command line (only those); ``defaults``: what a run
    without a plan uses. Without a plan: ``defaults`` updated by ``given``, no deviations. With
    one: the plan's options updated by ``given``, each given option that differs from the plan
    a deviation; with ``ignore`` (``--no-plan``) the run is as without a plan, "analysed
    without the plan" is the first deviation and every option that differs from the plan follows.

    Examples
    --------
    >>> entry = PlanEntry(1, "plan", "2026-12-02T06:50:00.000Z", "me@host", "ab" * 32, None,
    ...                   {"options": {"alpha": 0.05, "seed": 0}})
    >>> plan = Plan(entry, (), (entry,))
    >>> follow_plan(plan, {"alpha": 0.01}, {"alpha": 0.05, "seed": 1})
    ({'alpha': 0.01, 'seed': 0}, ["--alpha 0.01 instead of the plan's 0.05"])
    >>> follow_plan(plan, {}, {"alpha": 0.05, "seed": 1}, ignore=True)[1]
    ['analysed without the plan (--no-plan)', "--seed 1 instead of the plan's 0"]
    """
    if plan is None:
        return {**defaults, **given}, []
    planned = {k: v for k, v in plan.options.items() if k in defaults}
    options = {**defaults, **given} if ignore else {**defaults, **planned, **given}
    deviations = ["analysed without the plan (--no-plan)"] if ignore else []
    for name in defaults:
        if name in planned and (ignore or name in given) and options[name] != planned[name]:
            deviations.append(f"{FLAGS.get(name, name)} {_value(options[name])} instead of the plan's "
                              f"{_value(planned[name])}")
    return options, deviations


def notebook_plan(plan: Plan | None, deviations: list[str]) -> dict | None:
    """The plan as the analysis notebook's ``plan`` parameter (JSON-able), or None.

    Keys: sha256 and date of the plan as registered, its amendments in order (sha256, date,
    reason), deviations (str each), options (the plan's), unblinded_before (the date of the
    study's first export or analysis where that came before the plan, else None), and
    statement: :func:`plan_statement` of it, the sentence the report prints.
    """
    if plan is None:
        return None
    early = plan.unblinded_at if plan.unblinded_at and plan.unblinded_at < plan.registered.written_at else None
    out = {"sha256": plan.registered.sha256, "date": plan.registered.date,
           "amendments": [{"sha256": a.sha256, "date": a.date, "reason": a.reason} for a in plan.amendments],
           "deviations": list(deviations), "options": plan.options,
           "unblinded_before": utc_date(early) if early else None}
    out["statement"] = plan_statement(out)
    return out


def plan_statement(plan: dict | None) -> str:
    """The report's sentence on the plan: analysed as planned, or each deviation.

    ``plan``: the dict of :func:`notebook_plan` (the notebook's ``plan`` parameter), or None.

    Examples
    --------
    >>> plan = {"sha256": "1a2b3c4d5e6f" + "0" * 52, "date": "2026-12-02 06:50 UTC", "amendments": [],
    ...         "deviations": []}
    >>> plan_statement(plan)
    'Analysed as planned (plan 1a2b3c4d5e6f, registered 2026-12-02 06:50 UTC; no amendments).'
    >>> plan["amendments"] = [{"sha256": "9f8e7d6c5b4a" + "0" * 52, "date": "2026-12-09 10:00 UTC",
    ...                        "reason": "a third rater"}]
    >>> plan["deviations"] = ["--alpha 0.01 instead of the plan's 0.05"]
    >>> print(plan_statement(plan))
    Deviations from the plan (plan 1a2b3c4d5e6f, registered 2026-12-02 06:50 UTC; amendments: 9f8e7d6c5b4a of 2026-12-09 10:00 UTC, "a third rater"): --alpha 0.01 instead of the plan's 0.05.
    >>> plan_statement(None)
    'Analysed without a registered analysis plan.'
    """
    if not plan:
        return "Analysed without a registered analysis plan."
    amendments = plan.get("amendments") or []
    listed = ("amendments: " + "; ".join(f'{a["sha256"][:12]} of {a["date"]}, "{a["reason"]}"' for a in amendments)
              if amendments else "no amendments")
    late = (f"; written after the study's first export or analysis ({plan['unblinded_before']}), so not before "
            "the data were seen" if plan.get("unblinded_before") else "")
    which = f"plan {plan['sha256'][:12]}, registered {plan['date']}{late}; {listed}"
    deviations = plan.get("deviations") or []
    if deviations:
        return f"Deviations from the plan ({which}): {'; '.join(deviations)}."
    return f"Analysed as planned ({which})."


# --- the registry text -------------------------------------------------------------------------

def registry_text(plan: Plan) -> str:
    """The plan in force as text to paste into a registry: its sections, its amendments, the
    canonical JSON document and its SHA-256 and date."""
    entry = plan.latest
    d = entry.document
    study, options = d["study"], d["options"]
    styles = ", ".join(f"{s['style']} ({s['group']})" if s.get("group") else s["style"] for s in study["styles"])
    dims = ", ".join(f"{x['id']} ({x['min']}-{x['max']})" for x in study["dimensions"])
    software = d["software"]
    commit = software.get("commit")
    lines = [f"ANALYSIS PLAN ({d['format']})",
             f"Registered {plan.registered.date} by {plan.registered.written_by}, sha256 {plan.registered.sha256}",
             "",
             "Design: dimensions " + (dims or "none") + "; styles " + (styles or "none yet") + "; presets "
             + (", ".join(study["presets"]) or "none yet") + "; raters " + (", ".join(study["raters"]) or "none yet")
             + ".",
             "", "1. Questions and estimands"]
    for q in d["questions"]:
        label = "Composite" if q["part"] == "composite" else f"({q['part']})"
        lines += [f"   {label} {q['question']}", f"       Estimand: {q['estimand']}.", f"       Model: {q['model']}."]
    radiology = d["radiology"]
    pairs = ", ".join(f"{a} vs {b}" for a, b in radiology["pairs"]) or "none (no radiology and other styles)"
    lines += ["", f"2. Primary model. {d['primary_model']}",
              "", f"3. Nonsensical flags. {d['flags']}",
              "", f"4. Family and correction. {d['family']['text']}",
              "", f"5. Alpha: {_value(d['alpha'])} (two-sided).",
              "", f"6. Radiology contrasts. Claim: {radiology['claim']}. Pairs: {pairs}. {radiology['test']}",
              "", "7. Sensitivity analyses:"] + [f"   - {s}" for s in d["sensitivity"]]
    lines += ["", "8. Analysis options: " + ", ".join(f"{FLAGS[k]} {_value(v)}" for k, v in sorted(options.items())),
              "", "9. Software: " + ", ".join(f"{k} {software.get(k) or 'unknown'}" for k in ("medprobe", *PACKAGES))
              + f", Python {software.get('python') or 'unknown'}"
              + (f"; medprobe commit {commit}" + (" (with local changes)" if software.get("modified") else "")
                 if commit else "; medprobe commit unknown (not a git checkout)") + "."]
    if d.get("comparisons"):
        c = d["comparisons"]
        lines += ["", f"10. Side-by-side comparisons ({', '.join(c['presets'])}). {c['question']} Estimand: "
                      f"{c['estimand']}. Test: {c['test']}. {c['family']['text']} Estimates: {c['estimates']}."]
    if plan.amendments:
        lines += ["", "Amendments:"] + [f"   {i}. {a.date} by {a.written_by}: {a.reason} (sha256 {a.sha256})"
                                        for i, a in enumerate(plan.amendments, 1)]
    if plan.unblinded_at and plan.unblinded_at < plan.registered.written_at:
        lines += ["", f"Note: written after the study's first export or analysis ({utc_date(plan.unblinded_at)}): "
                      "not a pre-registration."]
    lines += ["", "Plan document (canonical JSON; the SHA-256 is of these bytes, UTF-8, without the line end):",
              canonical_json(d), "", f"SHA-256: {entry.sha256}", f"Date: {entry.date}"]
    if plan.amendments:
        lines.append(f"(this document is the plan as amended by amendment {len(plan.amendments)}; the plan as "
                     f"registered: sha256 {plan.registered.sha256}, {plan.registered.date})")
    return "\n".join(lines)
