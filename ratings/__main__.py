"""``python -m ratings``: a thin command line over the ratings package.

A study's course: build (blinded panels), invite (rater links), serve (the rating app), progress;
plan (lock the analysis plan before anyone sees the ratings by style: printed for a registry with
its SHA-256; after the first export or analysis it changes only by a dated amendment); export;
analyze (follows the plan and lists every deviation from it).
"""

from __future__ import annotations

import argparse
import csv
import functools
import os
import shutil
import sqlite3
import sys
from pathlib import Path

from probes.cli import run_command
from probes.errors import ProbeError

from .errors import RatingError

SCALE_MAX_BYTES = 100_000  # a scale is a few questions and their anchor labels


def _study_errors(writes: bool):
    """A study SQLite refuses to open or write (read-only copy, full disk) as one clear error."""
    def wrap(func):
        @functools.wraps(func)
        def run(args) -> int:
            try:
                return func(args)
            except sqlite3.OperationalError as exc:
                study = getattr(args, "study", None) or "the study folder"
                text = str(exc)
                if ("readonly" in text or "read-only" in text) and writes:
                    raise RatingError(f"{study}: the study database is read-only here ({text}); nothing was "
                                     "changed. This command writes to the study: run it on a copy you can "
                                     "write to, or ask for write access.") from None
                if "readonly" in text or "read-only" in text:
                    raise RatingError(f"{study}: the study database cannot be read in this read-only folder "
                                     f"({text}); nothing was changed. Copy the study folder to a place you "
                                     "can write to and run the command on the copy.") from None
                if "unable to open" in text or "disk" in text or "locked" in text:
                    raise RatingError(f"{study}: the study database cannot be used ({text}); check that the "
                                     "folder exists, is writable and has free space, and that no other "
                                     "program holds it locked, then run the command again") from None
                raise
        return run
    return wrap


@_study_errors(writes=True)
def _build(args) -> int:
    from probes.safeyaml import load_yaml

    from .scale import check_scale
    from .session import build_sessions

    if args.compare:
        return _build_comparisons(args)
    for flag, given in (("--pairs-per-prompt", args.pairs_per_prompt is not None), ("--blocks", args.blocks)):
        if given:
            raise RatingError(f"{flag} belongs to the comparison block: give it with --compare PRESETS "
                              "(nothing was changed)")
    scale = None
    if args.scale:
        scale = check_scale(load_yaml(args.scale, what="rating scale", max_bytes=SCALE_MAX_BYTES),
                            source=str(args.scale))
    summary = build_sessions(args.study, args.raters, presets=args.presets.split(",") if args.presets else None,
                             repeats=args.repeats, seed=args.seed, images_per_panel=args.images_per_panel,
                             shuffle_images=not args.keep_image_order, scale=scale, sample=args.sample,
                             stratify=[e for e in (args.stratify or "").split(",") if e.strip()],
                             sample_seed=args.sample_seed, practice=args.practice,
                             practice_file=args.practice_panels)
    print(f"{summary['panels']} panels in {args.study}"
          + (f" ({summary['skipped_incomplete']} skipped: fewer than {args.images_per_panel} images)"
             if summary["skipped_incomplete"] else ""))
    for rater, n in summary["assigned"].items():
        print(f"  {rater}: {n} new assignments")
    if summary["practice"]:
        print(f"{summary['practice']} practice panels, shown to every rater first and never analysed"
              + (f" ({summary['practice_new']} chosen now)" if summary["practice_new"] else ""))
        if summary["practice_new"] and not args.practice_panels:
            print("  give the team's reference ratings: python -m ratings practice --study "
                  f"{args.study} --template practice.csv, fill in the scores, then --reference practice.csv")
    return 0


def _build_comparisons(args) -> int:
    from probes.safeyaml import load_yaml

    from .compare import build_comparisons, design_lines
    from .scale import check_scale

    absolute_only = [flag for flag, given in (("--presets", args.presets), ("--sample", args.sample),
                                              ("--stratify", args.stratify), ("--practice", args.practice),
                                              ("--practice-panels", args.practice_panels)) if given]
    if absolute_only:
        raise RatingError(f"{', '.join(absolute_only)} belong{'s' if len(absolute_only) == 1 else ''} to the "
                          "absolute block; --compare builds the comparison block only. Build the absolute block "
                          "with its own `ratings build` (without --compare), before or after; nothing was changed")
    scale = None
    if args.scale:
        scale = check_scale(load_yaml(args.scale, what="rating scale", max_bytes=SCALE_MAX_BYTES),
                            source=str(args.scale))
    summary = build_comparisons(args.study, args.raters, args.compare.split(","), repeats=args.repeats,
                                seed=args.seed, images_per_panel=args.images_per_panel,
                                shuffle_images=not args.keep_image_order, pairs_per_prompt=args.pairs_per_prompt,
                                blocks=args.blocks, scale=scale)
    print(f"{summary['pairs']} side-by-side comparisons of {summary['prompts']} prompts in {args.study}"
          + (f" ({summary['skipped_prompts']} prompts skipped: not every preset has {args.images_per_panel} images)"
             if summary["skipped_prompts"] else ""))
    for line in design_lines(summary["design"]):
        print(line)
    for rater, n in summary["assigned"].items():
        print(f"  {rater}: {n} new comparisons")
    print("  raters see the blocks in this order: " + " then ".join(summary["blocks"] or _blocks(args.study)))
    return 0


def _blocks(study) -> list[str]:
    from .compare import block_order
    from .db import open_db

    conn = open_db(study, readonly=True)
    try:
        return block_order(conn)
    finally:
        conn.close()


@_study_errors(writes=True)
def _practice(args) -> int:
    from probes.tables import write_table

    from .practice import practice_overview, set_references

    if args.reference:
        n = set_references(args.study, args.reference)
        print(f"reference ratings of {n} practice panels set from {args.reference}")
    table = practice_overview(args.study)
    if table.empty:
        print(f"{args.study}: no practice panels; choose them with `python -m ratings build --practice N` "
              "(or --practice-panels FILE with the team's reference ratings)")
        return 0
    if args.template:
        path = Path(args.template)
        if path.exists():
            raise RatingError(f"{path}: exists already; give a new file name (nothing was written)")
        write_table(table.drop(columns=["practice", "prompt_id", "study_seed", "answered_by"]), path)
        print(f"wrote {path}: fill in the team's scores (and nonsensical yes/no, a note), then "
              f"python -m ratings practice --study {args.study} --reference {path}")
        return 0
    print(table.to_string(index=False))
    return 0


@_study_errors(writes=True)
def _scale_example(args) -> int:
    from .practice import add_scale_example

    relative = add_scale_example(args.study, args.dimension, args.value, args.image, caption=args.caption or "")
    print(f"the welcome page shows {relative} as an example of {args.dimension} {args.value}")
    return 0


@_study_errors(writes=True)
def _add_reference(args) -> int:
    from .session import add_reference

    prompt_id = add_reference(args.study, args.prompt, args.images, catalog=args.catalog)
    print(f"added {len(args.images)} reference images for prompt {prompt_id}; run `build` to assign them")
    return 0


@_study_errors(writes=True)
def _import_wide(args) -> int:
    from .io import import_wide

    summary = import_wide(args.file, catalog=args.catalog, study=args.study, sheet=args.sheet,
                          prompt_column=args.prompt_column, exclude_columns=args.exclude_columns)
    print(f"imported {summary['ratings']} ratings of {summary['prompts']} prompts by "
          f"{len(summary['raters'])} raters ({', '.join(summary['raters'])}) into {args.study}")
    return 0


@_study_errors(writes=False)
def _export(args) -> int:
    from .io import export

    path = export(args.study, args.output, format=args.format, include_repeats=args.include_repeats,
                  practice=args.practice, comparisons=args.comparisons)
    print(f"wrote {path}" + (" (practice answers only: not the study's)" if args.practice else "")
          + (" (the side-by-side comparisons)" if args.comparisons else ""))
    return 0


@_study_errors(writes=True)
def _plan(args) -> int:
    from .plan import OPTIONS, current_plan, registry_text, write_plan

    given = {name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None}
    if not Path(args.study).expanduser().is_dir():
        raise RatingError(f"{args.study}: no such study folder; give the folder that holds study.sqlite")
    if args.show:
        if given or args.amend is not None:
            raise RatingError("--show prints the study's plan and changes nothing: give it alone, or leave it out "
                              "to write or amend the plan")
        plan = current_plan(args.study)
        if plan is None:
            raise RatingError(f"{args.study}: the study has no analysis plan yet; write one before the first export: "
                              "python -m ratings plan --study DIR")
        print(registry_text(plan))
        return 0
    written = write_plan(args.study, given, amend=args.amend)
    print(registry_text(written.plan))
    latest = written.plan.latest
    said = {"plan": "wrote the analysis plan", "replacement": "replaced the analysis plan (before any export or "
            "analysis; the earlier plan stays on record)", "amendment": "recorded an amendment to the analysis plan",
            "unchanged": "the analysis plan is unchanged; nothing was written"}[written.kind]
    print(f"{said}: sha256 {latest.sha256}, {latest.date}, in {Path(args.study).expanduser().resolve()} "
          "(the audit trail records it; `python -m ratings plan --show` prints it again)", file=sys.stderr)
    return 0


def _follow_plan(args) -> tuple[dict, dict | None]:
    """The options `analyze` runs with, and the notebook's ``plan`` parameter (None without a plan)."""
    from .plan import current_plan, follow_plan, notebook_plan

    given = {name: getattr(args, name) for name in ANALYZE_DEFAULTS if getattr(args, name) is not None}
    plan = current_plan(args.study) if args.study else None
    if plan is None:
        if args.study and not args.no_plan:
            print(f"note: {args.study} has no analysis plan, so the report cannot say it was analysed as planned; "
                  "lock one before the first export with `python -m ratings plan --study DIR`", file=sys.stderr)
        return {**ANALYZE_DEFAULTS, **given}, None
    options, deviations = follow_plan(plan, given, ANALYZE_DEFAULTS, ignore=args.no_plan)
    if args.raters:
        deviations.append(f"--raters {args.raters}: only these raters' answers (the plan analyses every rater's)")
    return options, notebook_plan(plan, deviations)


@_study_errors(writes=False)
def _analyze(args) -> int:
    from probes.execute import execute_notebook

    from .analysis.report import load_comparisons, load_ratings, notebook_to_html
    from .io import comparison_table, tidy_table

    if args.study is not None and (args.table or args.comparisons):
        raise RatingError("give --study DIR, or exported tables (--table FILE, --comparisons FILE), not both: a "
                          "study folder's own ratings and comparisons are analysed with --study")
    if args.study is None and args.table is None and args.comparisons is None:
        raise RatingError("give --study DIR or --table FILE (an exported tidy table); exported side-by-side "
                          "comparisons go with --comparisons FILE, alone or beside --table")
    # every check before anything is written: a refused command leaves no folder behind
    if args.study and not Path(args.study).expanduser().is_dir():
        raise RatingError(f"{args.study}: no such study folder; give the folder that holds study.sqlite")
    if args.n_perm is not None and args.n_perm < 0 or args.n_boot is not None and args.n_boot < 0:
        raise RatingError("--n-perm and --n-boot count resamples: give 0 or more")
    if args.alpha is not None and not 0 < args.alpha < 1:
        raise RatingError(f"--alpha {args.alpha}: give a level between 0 and 1, e.g. 0.05")
    options, plan = _follow_plan(args)  # the options not given come from the study's plan
    if args.table and not Path(args.table).exists():
        raise RatingError(f"{args.table}: file not found; export one with `python -m ratings export`")
    if args.comparisons and not Path(args.comparisons).is_file():
        raise RatingError(f"{args.comparisons}: file not found; export one with `python -m ratings export --study "
                          "DIR --comparisons -o FILE`")
    # refuses simulated answers beside people's unless chosen, before the notebook's kernel starts; a
    # study (or export) with side-by-side comparisons and no absolute ratings gets a comparisons report
    compared = load_comparisons(study=args.study, table=args.comparisons, read_comparisons=comparison_table,
                                raters=args.raters, include_simulated=args.include_simulated)
    if args.study or args.table:
        load_ratings(study=args.study, table=args.table, raters=args.raters, include_simulated=args.include_simulated,
                     read_study=tidy_table, allow_empty=len(compared) > 0)
    elif not len(compared):
        raise RatingError(f"{args.comparisons}: the file holds no comparisons to analyse")
    out = Path(args.out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise RatingError(f"{out}: is a file, not a folder; choose another --out")
    # the report is made in a hidden folder beside --out and moved into place when whole: an
    # interrupted or failed analysis leaves no half-written tables behind
    work = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        work.mkdir(parents=True)
    except OSError as exc:
        raise RatingError(f"{out}: cannot create the output folder ({exc.strerror}); choose another --out") from None
    try:
        parameters = dict(study=str(Path(args.study).resolve()) if args.study else None,
                          table=str(Path(args.table).resolve()) if args.table else None,
                          raters=args.raters, include_simulated=args.include_simulated,
                          **options, out=str(work), plan=plan)
        if args.reproduce:  # the published study's analysis too: reproduction.csv and its report section
            parameters["reproduce"] = True
        if args.scores:
            parameters["scores"] = _panel_scores_file(args.scores, work)
        if args.comparisons:  # an exported comparisons table (ratings export --comparisons)
            parameters["comparisons"] = str(Path(args.comparisons).resolve())
        notebook = execute_notebook("30_analyze.ipynb", work / "30_analyze.ipynb", parameters,
                                    progress=not args.quiet)
        notebook_to_html(notebook, work / "report.html")
        _move_into(work, out)
    except KeyboardInterrupt:
        print(f"interrupted: the analysis stopped before its report was complete; nothing was written to {out}",
              file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.study:
        from .access import record_in_study

        detail = {"out": str(out), "plan": plan["sha256"] if plan else None,
                  **({"deviations": plan["deviations"]} if plan and plan["deviations"] else {})}
        if not record_in_study(args.study, "analysis", detail):
            print(f"note: {args.study} is read-only here, so this analysis is not in its audit trail",
                  file=sys.stderr)
    if plan:
        print(plan["statement"])
    print(f"report: {out / 'report.html'}\nmethods: {out}/methods.md\ntables: {out}/*.csv (primary model: "
          f"{out}/ordinal.csv; LaTeX in {out}/tables), figures: {out}/figures"
          + (f"\npublished analysis, reproduced: {out / 'reproduction.csv'}" if args.reproduce else ""))
    return 0


def _move_into(work: Path, out: Path) -> None:
    """Every file the analysis made, moved from ``work`` to the same place under ``out`` (an older
    report's files of the same name are replaced; nothing else in ``out`` is touched)."""
    out.mkdir(parents=True, exist_ok=True)
    for folder, _, names in os.walk(work):
        target = out / Path(folder).relative_to(work)
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            os.replace(Path(folder) / name, target / name)


@_study_errors(writes=False)
def _rank(args) -> int:
    import pandas as pd

    from .sampling import rank_panels

    table = rank_panels(args.study, args.metric, dimension=args.dimension)
    if args.by == "disagreement":
        table = table.reindex(table["disagreement"].abs().sort_values(ascending=False, na_position="last").index)
    if args.output:
        from .io import write_table

        print(f"wrote {len(table)} panels to {write_table(table, args.output)}")
        return 0
    shown = table.head(args.top).copy()
    shown["text"] = shown["text"].str.slice(0, 60)
    with pd.option_context("display.max_columns", None, "display.width", 250, "display.float_format", "{:.3f}".format):
        print(shown.drop(columns=["study_seed"]).to_string(index=False))
    rated = int(table["expert_median"].notna().sum())
    print(f"{len(table)} panels scored, {rated} rated by the experts" + (f"; {len(table) - args.top} more with -o FILE"
                                                                         if len(table) > args.top else ""))
    return 0


@_study_errors(writes=True)
def _invite(args) -> int:
    from urllib.parse import urlsplit

    from .access import invite

    invitations = invite(args.study, args.raters, rotate=args.rotate, base_url=args.base_url)
    base_url = invitations[0].link.split("?", 1)[0]
    host = urlsplit(base_url).hostname or ""
    if not args.base_url:
        print(f"links on {base_url}: the address `ratings serve` recorded in the study (give --base-url to "
              "choose another)", file=sys.stderr)
    if args.output:
        out = Path(args.output).expanduser()
        try:  # the links are secrets: only this account may read the file, and none is overwritten
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            _print_links(invitations)
            raise RatingError(f"{out}: cannot create the links file ({exc.strerror}); the links were issued and "
                             "are printed above: copy them now, they are not shown again") from None
        with os.fdopen(fd, "w", newline="") as f:
            csv.writer(f).writerows([("rater", "link"), *((i.rater, i.link) for i in invitations)])
        print(f"wrote {len(invitations)} links to {out} (readable by this account only)")
    else:
        _print_links(invitations)
    print("Each link lets its holder rate as that rater, with no other login: send it to that rater only. "
          "They are not shown again (the study keeps only their hashes); a lost link is replaced "
          "with `invite --rotate`.", file=sys.stderr)
    if urlsplit(base_url).scheme == "http" and host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: {base_url} is plain http: anyone on the network path can read a link and use it. "
              "Serve the app behind a TLS proxy and give its https address (README: Rating with clinicians).",
              file=sys.stderr)
    return 0


def _print_links(invitations) -> None:
    width = max(len(i.rater) for i in invitations)
    for i in invitations:
        print(f"{i.rater:<{width}}  {i.link}")


@_study_errors(writes=True)
def _revoke(args) -> int:
    from .access import revoke

    for rater, n in revoke(args.study, args.raters).items():
        print(f"{rater}: {n} link{'s' if n > 1 else ''} revoked; an open page of theirs empties at its next click")
    return 0


@_study_errors(writes=False)
def _audit(args) -> int:
    from .access import audit_table, keys_table

    if args.keys:
        table = keys_table(args.study)
    else:
        table = audit_table(args.study, rater=args.rater, since=args.since, answers=args.answers)
    if args.output:
        from .io import write_table

        path = write_table(table, args.output)  # user agents are the clients' text: spreadsheet-safe
        print(f"wrote {len(table)} rows to {path}")
        return 0
    if table.empty:
        print("no audit events yet" if not args.keys else "no rater links issued yet")
        return 0
    import pandas as pd

    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 250,
                           "display.max_colwidth", 60):
        print(table.astype(object).where(table.notna(), "").to_string(index=False))
    return 0


@_study_errors(writes=False)
def _progress(args) -> int:
    from .progress import format_progress, progress_table

    table = progress_table(args.study)
    if args.output:
        from .io import write_table

        path = write_table(table, args.output)  # spreadsheet-safe CSV/XLSX, or parquet
        print(f"wrote progress of {len(table)} raters to {path}")
        return 0
    print(format_progress(table))
    from .progress import comparison_progress

    compared = comparison_progress(args.study)
    if len(compared):
        print("\nside-by-side comparisons (answered: both questions):")
        print(compared.to_string(index=False))
    return 0


def _serve(args) -> int:
    from .serve import serve

    return serve(args.study, port=args.port, host=args.host, token=not args.no_token, cull_idle=args.cull_idle,
                 base_path=args.base_path, trusted_proxies=args.trusted_proxy, max_kernels=args.max_kernels,
                 public_url=args.public_url)


def _panel_scores_file(source: str, out: Path) -> str:
    """--scores as the CSV the notebook reads: a study folder's scores, or a CSV/parquet of panel scores."""
    import pandas as pd

    from probes.scoretable import PANEL_COLUMNS

    from .analysis.metrics import read_panel_scores

    path = Path(source).expanduser().resolve()
    if path.is_dir():
        table = read_panel_scores(path)
    elif path.suffix == ".parquet":
        table = pd.read_parquet(path)
    elif path.exists():
        return str(path)
    else:
        raise RatingError(f"--scores {source}: no such file or folder; give the study folder that was scored "
                         "(python -m probes score) or a CSV of panel scores")
    missing = [c for c in ("prompt_id", "preset", "metric", "value") if c not in table.columns]
    if missing:
        raise RatingError(f"--scores {source}: no column {', '.join(missing)}; panel scores have {', '.join(PANEL_COLUMNS)}")
    target = out / "panel_scores.csv"
    table.to_csv(target, index=False)
    return str(target)


def _simulate(args) -> int:
    from .analysis.simulate import simulate_ratings

    if args.study:
        return _simulate_study(args)
    if args.into:
        raise RatingError("--into copies a study before simulated raters rate it: give --study DIR as well")
    if args.follow:
        raise RatingError("--follow makes simulated raters follow a metric of a study's scores: give --study DIR")
    out = Path(args.output).expanduser().resolve()
    if not out.parent.is_dir():
        raise RatingError(f"{out}: the folder {out.parent} does not exist; create it (mkdir -p) or choose "
                         "another -o")
    kwargs = dict(catalog=args.catalog, presets=tuple(args.presets.split(",")),
                  raters=tuple((args.raters or "R1,R2,R3").split(",")),
                  repeats=args.repeats, seed=args.seed)
    if args.no_effect:
        kwargs["style_means"] = {}  # every style at the same mean
    table = simulate_ratings(**kwargs)
    try:
        if out.suffix == ".parquet":
            table.to_parquet(out, index=False)
        else:
            table.to_csv(out, index=False)
    except OSError as exc:
        raise RatingError(f"{out}: cannot write the file ({exc.strerror}); choose a folder you can write "
                         "to with -o") from None
    print(f"wrote {len(table)} SIMULATED ratings ({table['panel'].nunique()} panels, "
          f"{table['rater'].nunique()} simulated raters) to {out}")
    return 0


@_study_errors(writes=True)
def _simulate_study(args) -> int:
    from .simulated_raters import STUDY_RATERS, rate_study, simulate_copy

    kwargs = dict(raters=tuple(args.raters.split(",")) if args.raters else STUDY_RATERS, follow=args.follow,
                  slope=args.slope, style_means={} if args.no_effect else None, seed=args.seed)
    summary = simulate_copy(args.study, args.into, **kwargs) if args.into else rate_study(args.study, **kwargs)
    where = summary.get("copy", args.study)
    follows = (f", each panel's rating following {summary['follow']} ({args.slope:+g} scale points per SD of it"
               + (f"; {summary['unscored']} panels without it at its mean" if summary["unscored"] else "") + ")"
               if summary["follow"] else "")
    copied = f" (a copy of {args.study}, which holds no simulated answer)" if args.into else ""
    print(f"SIMULATED: wrote {summary['ratings']} SIMULATED ratings of {summary['panels']} panels by simulated "
          f"raters {', '.join(summary['raters'])} into {where}{copied}{follows}"
          + (f", and {summary['comparisons']} SIMULATED side-by-side answers" if summary.get("comparisons") else "")
          + ". They are not clinicians' ratings; every report made from them says SIMULATED.")
    return 0


def _add_build(sub) -> None:
    """``build``: blinded panels for the raters, optionally a stratified sample of them."""
    p = sub.add_parser("build", help="create blinded panels and assign them to raters")
    p.add_argument("--study", required=True)
    p.add_argument("--raters", required=True, help="comma-separated rater ids, e.g. A,B,C")
    p.add_argument("--presets", help="comma-separated presets to include (default: all)")
    p.add_argument("--repeats", type=float, default=0.0, help="share of panels shown twice (intra-rater)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-rater orders")
    p.add_argument("--images-per-panel", type=int, default=4)
    p.add_argument("--keep-image-order", action="store_true", help="do not shuffle images within panels")
    p.add_argument("--scale", help="YAML file with a custom rating scale")
    p.add_argument("--sample", type=int, help="rate only this many panels, stratified (see --stratify)")
    p.add_argument("--stratify", help="strata of the sample: columns and metric quartiles, e.g. style,metric:clip")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the sample's draw")
    p.add_argument("--compare", metavar="PRESETS",
                   help="the comparison block: two or more presets side by side per prompt, e.g. glide-clip,glide-cfg")
    p.add_argument("--pairs-per-prompt", type=int, metavar="N",
                   help="with --compare and 3+ presets: preset pairs per prompt, balanced (default: every pair)")
    p.add_argument("--blocks", metavar="ORDER",
                   help="the order raters see the blocks in: absolute,compare (default) or compare,absolute")
    p.add_argument("--practice", type=int, metavar="N",
                   help="show every rater N practice panels first (taken out of the study, never analysed)")
    p.add_argument("--practice-panels", metavar="FILE",
                   help="or the practice panels the team names, with its reference ratings (CSV/XLSX: prompt, "
                        "preset, one column per question, nonsensical, note)")
    p.set_defaults(func=_build)


def _add_practice(sub) -> None:
    """``practice``: the practice panels and the team's reference ratings."""
    p = sub.add_parser("practice", help="list the practice panels; write a template for, or set, the team's "
                                        "reference ratings")
    p.add_argument("--study", required=True)
    p.add_argument("--template", metavar="FILE", help="write the practice panels as a CSV/XLSX to fill in")
    p.add_argument("--reference", metavar="FILE", help="set the reference ratings from a filled-in file")
    p.set_defaults(func=_practice)


def _add_scale_example(sub) -> None:
    """``scale-example``: the team's image of one scale point, for the welcome page."""
    p = sub.add_parser("scale-example", help="an example image of one scale point, shown on the welcome page")
    p.add_argument("--study", required=True)
    p.add_argument("--dimension", required=True, help="the question, e.g. style or content")
    p.add_argument("--value", type=int, required=True, help="the scale point, e.g. 4")
    p.add_argument("--caption", help="a line under the image, e.g. 'H&E, well-formed glands'")
    p.add_argument("image", help="a PNG, JPEG or TIFF file")
    p.set_defaults(func=_scale_example)


def _add_rank(sub) -> None:
    """``rank``: panels ranked by an automated metric beside the experts."""
    p = sub.add_parser("rank", help="rank all panels by an automated metric, beside the experts' ratings")
    p.add_argument("--study", required=True)
    p.add_argument("--metric", required=True, help="a scored metric, e.g. clip (or clip:<scorer>)")
    p.add_argument("--dimension", default="style", help="the expert question to compare with (default style)")
    p.add_argument("--top", type=int, default=20, help="rows to print (default 20; all with -o)")
    p.add_argument("--by", choices=["rank", "disagreement"], default="rank",
                   help="order: by the metric, or by |disagreement| with the experts")
    p.add_argument("-o", "--output", help="write all rows to a CSV, XLSX or parquet file")
    p.set_defaults(func=_rank)


def _add_add_reference(sub) -> None:
    """``add-reference``: a control panel of real images."""
    p = sub.add_parser("add-reference", help="add real images of a prompt as a control panel")
    p.add_argument("--study", required=True)
    p.add_argument("--prompt", required=True, help="the prompt text the images illustrate")
    p.add_argument("--catalog", help="catalog to match the prompt to a style and topic")
    p.add_argument("images", nargs="+", help="image files")
    p.set_defaults(func=_add_reference)


def _add_import_wide(sub) -> None:
    """``import-wide``: another study's wide rating table."""
    p = sub.add_parser("import-wide", help="import a wide rating table (CSV or XLSX) from another study")
    p.add_argument("file")
    p.add_argument("--catalog", required=True)
    p.add_argument("--study", required=True)
    p.add_argument("--sheet", help="XLSX sheet name (default: the first)")
    p.add_argument("--prompt-column", help="prompt text column (default: Prompt or prompt)")
    p.add_argument("--exclude-columns", help="regex of columns to ignore, e.g. '_Median$'")
    p.set_defaults(func=_import_wide)


def _add_export(sub) -> None:
    """``export``: the latest ratings as a tidy or wide table."""
    p = sub.add_parser("export", help="export the latest ratings as a tidy (or wide) table")
    p.add_argument("--study", required=True)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--format", choices=["csv", "parquet", "wide"], default="csv")
    p.add_argument("--include-repeats", action="store_true", help="also the repeated showings (repeat=1)")
    p.add_argument("--practice", action="store_true",
                   help="the practice answers instead, beside the team's reference (never part of the study's)")
    p.add_argument("--comparisons", action="store_true",
                   help="the side-by-side comparisons instead: rater, prompt, both presets, each one's side, the choice")
    p.set_defaults(func=_export)


# What `analyze` runs with where the study has no analysis plan (and with --table, or --no-plan).
# The analysis' own defaults: the primary part (b)'s flag rule (each rater's own unflagged answers).
ANALYZE_DEFAULTS = {"aggregate": "median", "nonsensical": "exclude", "correction": "holm", "alpha": 0.05,
                    "n_boot": 2000, "n_perm": 0, "seed": 0}


def _analysis_options(p, said) -> None:
    """The options an analysis plan fixes, each default None, so that a value is there only when the
    user gave it; ``said(name)`` is the end of its help, naming the default."""
    p.add_argument("--aggregate", choices=["median", "none"],
                   help="rank tests: panel medians (the published study) or per-rater scores; the primary "
                        "ordinal model always uses per-rater scores" + said("aggregate"))
    p.add_argument("--nonsensical", choices=["zero", "panel-zero", "exclude", "lowest"],
                   help="how a rating flagged nonsensical counts in the rank tests, descriptives and shares: "
                        "exclude (each rater's own flagged answers left out), lowest (its own category below 0), "
                        "zero, or panel-zero (the published study's rule); the primary analysis always models the "
                        "flags (part a) and each rater's unflagged answers (part b)" + said("nonsensical"))
    p.add_argument("--correction", choices=["holm", "fdr_bh", "bonferroni"],
                   help="adjustment over the declared family (all style pairs of a dimension)" + said("correction"))
    p.add_argument("--alpha", type=float, help="level of every test" + said("alpha"))
    p.add_argument("--n-boot", type=int, help="bootstrap resamples for effect-size CIs" + said("n_boot"))
    p.add_argument("--n-perm", type=int,
                   help="topic-respecting permutations for the ordinal contrasts (0: none; each refits the model)"
                        + said("n_perm"))
    p.add_argument("--seed", type=int, help="seed of the resamples" + said("seed"))


def _add_plan(sub) -> None:
    """``plan``: the locked analysis plan (pre-registration)."""
    p = sub.add_parser("plan", help="write the study's analysis plan before the first export (questions, models, "
                                    "family, alpha, options, software), print it for a registry with its SHA-256; "
                                    "--amend after unblinding, --show to print it")
    p.add_argument("--study", required=True)
    _analysis_options(p, lambda name: " (default: the plan in force's, else the analysis's own)")
    p.add_argument("--amend", metavar="REASON",
                   help="record a dated amendment with this reason (the only way to change the plan after the "
                        "study's first export or analysis; the original stays on record)")
    p.add_argument("--show", action="store_true", help="print the plan in force and its amendments; change nothing")
    p.set_defaults(func=_plan)


def _add_analyze(sub) -> None:
    """``analyze``: the analysis notebook and its report."""
    p = sub.add_parser("analyze", help="run the analysis notebook: tables, figures and an HTML report")
    p.add_argument("--study", help="study folder")
    p.add_argument("--table", help="or an exported tidy table (CSV or parquet)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--raters", help="only these raters' answers, comma-separated (e.g. A,B)")
    p.add_argument("--include-simulated", action="store_true",
                   help="analyse simulated raters' answers (sim-1, ...) beside people's; the report, every table "
                        "and figure then say SIMULATED with the counts (without it such a study is refused)")
    # the analysis options: the study's plan's where one was written (python -m ratings plan), else
    # ANALYZE_DEFAULTS; default None here, so that only an option the user gave is a deviation
    _analysis_options(p, lambda name: f" (default: the plan's, else {ANALYZE_DEFAULTS[name]})")
    p.add_argument("--no-plan", action="store_true",
                   help="ignore the study's analysis plan (the report lists it as a deviation: analysed without "
                        "the plan)")
    p.add_argument("--scores", help="with --table: automated scores, as the scored study folder or a CSV/parquet "
                                    "of panel scores (with --study they are read from the study)")
    p.add_argument("--comparisons", metavar="FILE",
                   help="with --table: the side-by-side comparisons, as exported by `ratings export --comparisons` "
                        "(a study folder's own are read with --study)")
    p.add_argument("--reproduce", action="store_true",
                   help="also the published study's analysis, exactly (Kruskal-Wallis on prompt medians, every "
                        "style pair, uncorrected): reproduction.csv and a report section beside the primary analysis")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_analyze)


def _add_invite(sub) -> None:
    """``invite``: one secret link per rater."""
    p = sub.add_parser("invite", help="personal rater links: one secret link per rater, printed once")
    p.add_argument("--study", required=True)
    p.add_argument("--raters", required=True, help="comma-separated rater ids (built with `ratings build`)")
    p.add_argument("--base-url", default=None,
                   help="the address raters open, e.g. https://rating.hospital.org/medprobe/ (default: the one "
                        "`ratings serve` recorded in the study when it started)")
    p.add_argument("--rotate", action="store_true", help="replace a rater's working link (the old one stops)")
    p.add_argument("-o", "--output", help="write the links to this new CSV file (mode 600) instead of printing")
    p.set_defaults(func=_invite)


def _add_revoke(sub) -> None:
    """``revoke``: stop raters' links."""
    p = sub.add_parser("revoke", help="stop raters' links at once")
    p.add_argument("--study", required=True)
    p.add_argument("--rater", "--raters", dest="raters", required=True, help="rater id(s), comma-separated")
    p.set_defaults(func=_revoke)


def _add_audit(sub) -> None:
    """``audit``: the audit trail, or the links issued."""
    p = sub.add_parser("audit", help="print the audit trail: links, logins, refused keys, exports")
    p.add_argument("--study", required=True)
    p.add_argument("--rater", help="only events of this rater")
    p.add_argument("--since", help="only events from this UTC time on, e.g. 2026-11-23 or 2026-11-23T14:00")
    p.add_argument("--answers", action="store_true", help="also one line per saved answer, with its session")
    p.add_argument("--keys", action="store_true", help="list the links issued (never the keys) instead")
    p.add_argument("-o", "--output", help="write a CSV or XLSX file instead of printing")
    p.set_defaults(func=_audit)


def _add_progress(sub) -> None:
    """``progress``: who has rated what."""
    p = sub.add_parser("progress", help="who has rated what: per rater answered, left, repeats, flagged, "
                                        "time per panel, link state (read-only; safe while raters work)")
    p.add_argument("--study", required=True)
    p.add_argument("-o", "--output", help="write a CSV, XLSX or parquet file instead of printing")
    p.set_defaults(func=_progress)


def _add_serve(sub) -> None:
    """``serve``: the rating app behind Voilà."""
    p = sub.add_parser("serve", help="serve the rating app with Voilà: personal links log raters in, the team's token, idle culling")
    p.add_argument("--study", required=True)
    p.add_argument("--port", type=int, default=8866)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (keep 127.0.0.1 behind a TLS proxy)")
    p.add_argument("--no-token", action="store_true", help="no token login (127.0.0.1 only: one researcher)")
    p.add_argument("--cull-idle", type=int, default=900, help="seconds before a kernel whose page closed stops")
    p.add_argument("--base-path", default="/", help="the path a reverse proxy serves the app under, e.g. /medprobe/")
    p.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDRESS",
                   help="address (or network) of the reverse proxy whose X-Forwarded-For / X-Real-IP is believed "
                        "(repeatable); without it the client address is the connection's own")
    p.add_argument("--max-kernels", type=int, default=40, help="open pages (kernels, ~180 MB each) the server holds")
    p.add_argument("--public-url", default="", metavar="URL",
                   help="the address raters open through a reverse proxy, e.g. https://rating.hospital.org/medprobe/ "
                        "(recorded for `ratings invite`; default http://HOST:PORT/BASE_PATH)")
    p.set_defaults(func=_serve)


def _add_simulate(sub) -> None:
    """``simulate``: SIMULATED ratings, as a table or into a study."""
    p = sub.add_parser("simulate", help="SIMULATED ratings (for demos and power): a tidy table (-o FILE), or "
                                        "simulated raters sim-1.. rating a study's own panels (--study DIR)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("-o", "--output", help="write a tidy table of a simulated catalog study: CSV or parquet file")
    target.add_argument("--study", help="a study folder with built panels (python -m ratings build): simulated "
                                        "raters rate them, written into its database")
    p.add_argument("--into", metavar="DIR",
                   help="--study only: simulate into a new copy of the study at DIR (an older simulated copy "
                        "there is replaced), so the study served to clinicians holds no simulated answer")
    p.add_argument("--catalog", default="oncology", help="-o only")
    p.add_argument("--presets", default="glide-cfg,glide-clip", help="-o only")
    p.add_argument("--raters", help="comma-separated; sim- is put in front (default: R1,R2,R3 with -o, "
                                    "1,2,3 with --study)")
    p.add_argument("--repeats", type=float, default=0.1, help="-o only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-effect", action="store_true", help="all styles equal (a null study)")
    p.add_argument("--follow", metavar="METRIC",
                   help="--study only: ratings follow this metric of the study's automated scores (metric or "
                        "metric:scorer), plus noise, so the metric-versus-experts section has a relation to find")
    p.add_argument("--slope", type=float, default=1.0,
                   help="with --follow: scale points per standard deviation of the metric (default 1)")
    p.set_defaults(func=_simulate)


# one function per subcommand, each adding its parser and arguments; this order is --help's
SUBCOMMANDS = (
    _add_build, _add_practice, _add_scale_example, _add_rank, _add_add_reference, _add_import_wide, _add_plan, _add_export, _add_analyze,
    _add_invite, _add_revoke, _add_audit, _add_progress, _add_serve, _add_simulate,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m ratings`` parser: every subcommand of :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(prog="python -m ratings", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    # the generation side's errors too: a study folder, a catalog or a table write can fail there
    return run_command(build_parser(), argv, errors=(ProbeError, RatingError))


if __name__ == "__main__":
    sys.exit(main())
