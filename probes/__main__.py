"""``python -m probes``: a thin command line over the probes package."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import catalog as cat
from .cli import run_command
from .errors import ProbeError


def _catalog_validate(args) -> int:
    catalog = cat.load_catalog(args.file)
    n = len(cat.expand(catalog))
    print(f"ok: {catalog.path} is catalog {catalog.name} v{catalog.version} with {n} prompts")
    return 0


def _catalog_show(args) -> int:
    print(cat.summary(cat.load_catalog(args.file)))
    return 0


def _catalog_expand(args) -> int:
    table = cat.expand(cat.load_catalog(args.file))
    out = Path(args.output)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
    except OSError as exc:
        raise ProbeError(f"{out}: cannot write the prompt table ({exc.strerror}); "
                         "choose a writable path with -o") from None
    print(f"wrote {len(table)} prompts to {out}")
    return 0


def _run(args) -> int:
    from .plan import shard_from_env
    from .run import launch, run_notes

    args.shard_index, args.num_shards = shard_from_env(args.shard_index, args.num_shards)
    if args.device is None and "LOCAL_RANK" in os.environ and args.num_shards > 1:
        args.device = f"cuda:{os.environ['LOCAL_RANK']}"  # one GPU per process under accelerate/torchrun
    # every mistake in the command stops in launch, before anything is created and before a kernel starts
    done = launch(args.study, args.catalog, args.presets, args.images_per_prompt, args.seed, args.styles,
                  args.topics, args.detail, args.shard_index, args.num_shards, args.run_id, args.presets_file,
                  args.device, args.force, args.allow_custom_backends, compare=args.compare,
                  progress=not args.quiet)
    record, target = done.record, done.target
    print(f"run {target.run_id}: {record['n_generated']} images generated, {record['n_skipped']} already there, "
          f"{record['n_failed']} failed; record: {done.notebook}")
    if target.sharded_run:
        print(f"  shard {args.shard_index} of {args.num_shards} of run {target.sharded_run}, stored in "
              f"{target.store}; when the shards are done: python -m probes merge --study {target.study}")
    for note in run_notes(record["n_missing"] or 0, record["n_elsewhere"] or 0):
        print(f"  {note}")
    for row in done.failures.head(10).itertuples():
        print(f"  failed: {row.preset} / {row.prompt_id}: {row.error}", file=sys.stderr)
    return 0 if done.ok else 1


def _merge(args) -> int:
    from .merge import merge

    result = merge(args.study, progress=not args.quiet)
    print(result)
    return 0 if result.ok else 1


def _verify(args) -> int:
    from .verify import verify_study

    report = verify_study(args.study, sample=None if args.all else args.sample, seed=args.seed,
                          presets=args.presets, device=args.device, presets_file=args.presets_file,
                          allow_custom_backends=args.allow_custom_backends, progress=not args.quiet)
    print(report)
    if args.output:
        print(f"wrote one row per image to {report.write(args.output)}")
    return 0 if report.ok else 1


def _status(args) -> int:
    import pandas as pd

    from . import shards

    table = shards.status(args.study)
    _print_scored(args.study)
    if table.empty:
        print(f"no sharded runs in {Path(args.study).expanduser().resolve()}")
        return 0
    with pd.option_context("display.width", 200, "display.max_rows", 1000):
        print(table.drop(columns=["last_run"]).to_string(index=False))
    if (table.state == "finished").any():
        print(f"finished shards not merged yet: python -m probes merge --study {args.study}")
    if table.state.isin(["interrupted", "not started"]).any():
        print("interrupted and unstarted shards resume when their run is submitted again (same --run-id)")
    return 0


def _print_scored(study: str) -> None:
    """`scored` line of `probes status`: rows of the scores table per metric."""
    from .scores import scored_counts
    from .store import DB_NAME, Study

    if not (Path(study).expanduser() / DB_NAME).exists():
        return
    with Study(study, readonly=True, require_current=False) as st:
        counts = scored_counts(st)
    if not counts:
        print(f"scored: none yet (python -m probes score --study {study} --metrics clip,diversity)")
        return
    parts = [f"{metric} {n} {level}{'s' if n != 1 else ''}" for metric, levels in counts.items()
             for level, n in levels.items()]
    print("scored: " + ", ".join(parts))


def _parse_pins(values: list[str] | None) -> dict[str, str]:
    pins = {}
    for value in values or []:
        for item in value.split(","):
            metric, sep, digest = item.partition("=")
            if not sep or not metric.strip() or not digest.strip():
                raise ProbeError(f"--pin {item!r}: write METRIC=SHA256, e.g. --pin clip=<64 hex characters>")
            pins[metric.strip()] = digest.strip()
    return pins


def _score(args) -> int:
    from .plan import as_list
    from .scores import score_study

    settings: dict[str, dict] = {}
    for metric, key, value in (("clip", "model", args.clip_model), ("biomedclip", "model", args.biomedclip_model),
                               ("xrv", "model", args.xrv_model), ("fid", "reference", args.reference),
                               ("fid", "features", args.fid_features)):
        if value:
            settings.setdefault(metric, {})[key] = value
    counts = score_study(args.study, args.metrics, presets=as_list(args.presets), device=args.device,
                         batch_size=args.batch_size, pins=_parse_pins(args.pin), progress=not args.quiet,
                         scorer_settings=settings)
    for metric, c in counts.items():
        if c.get("skipped"):
            continue  # score_study said why
        line = f"{metric}: {c['added']} scores added, {c['present']} already there"
        if c["missing_files"]:
            line += f"; {c['missing_files']} images missing from images/ were not scored (run the probe again)"
        print(line)
    return 0


def _xrv_weights(args) -> int:
    from .scorers.xrv import convert_weights

    out = Path(args.output).expanduser()
    if out.exists():
        raise ProbeError(f"{out} exists; give a new file name (nothing was written)")
    digest = convert_weights(args.name, out)
    print(f"wrote {out}\nscore with: python -m probes score --metrics xrv --xrv-model {out} --pin xrv={digest}")
    return 0


def _presets(args) -> int:
    from .generators import backend_class, load_presets

    presets = load_presets(args.presets_file)
    print(f"{'preset':<14} {'backend':<10} {'weights':<44} description")
    for name, settings in presets.items():
        cls = backend_class(settings["backend"])
        status = cls.weights_status(settings)
        description = " ".join(str(settings.get("description", "")).split())
        print(f"{name:<14} {settings['backend']:<10} {status:<44} {description[:70]}")
    return 0


def _digests(args) -> int:
    from .generators import backend_class, load_presets, preset_settings

    settings = preset_settings(args.preset, load_presets(args.presets_file))
    # a diffusers preset is measured from its files alone: hashing FLUX needs no 48 GB of RAM
    info = backend_class(settings["backend"]).weight_record(args.preset, {**settings, "device": "cpu"})
    print(f"# what preset {args.preset} loads: paste under the preset, and a study made later with other "
          "weights stops before its first image")
    if info.get("revision"):
        print(f'revision: "{info["revision"]}"  # the hub commit of these files')
    elif info["backend"] == "diffusers":
        print("# no hub commit: a local folder (the digests below pin it)")
    print("sha256:")
    for name, digest in sorted(info["digests"].items()):
        print(f'  {name}: "{digest}"')
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m probes", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    catalog = sub.add_parser("catalog", help="validate, summarise or expand a prompt catalog")
    catalog_sub = catalog.add_subparsers(dest="action", required=True)
    p = catalog_sub.add_parser("validate", help="check a catalog and report problems")
    p.add_argument("file", help="catalog YAML file, or the name of a shipped one (oncology)")
    p.set_defaults(func=_catalog_validate)
    p = catalog_sub.add_parser("show", help="print counts per style, topic group and detail level")
    p.add_argument("file")
    p.set_defaults(func=_catalog_show)
    p = catalog_sub.add_parser("expand", help="write the prompt table as CSV")
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, help="CSV file to write")
    p.set_defaults(func=_catalog_expand)

    p = sub.add_parser("run", help="generate a catalog's images into a study (executes notebooks/10_probe.ipynb)")
    p.add_argument("--study", required=True, help="study folder (created if missing)")
    p.add_argument("--catalog", required=True, help="catalog YAML file or shipped name")
    p.add_argument("--presets", required=True, help="comma-separated preset names")
    p.add_argument("--images-per-prompt", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="study seed (default 0)")
    p.add_argument("--styles", help="comma-separated style ids (default all)")
    p.add_argument("--topics", help="comma-separated topic ids (default all)")
    p.add_argument("--detail", help="short, detailed or both (default)")
    p.add_argument("--shard-index", type=int,
                   help="this process's shard (default: its position in a SLURM array, or RANK)")
    p.add_argument("--num-shards", type=int,
                   help="number of shards (default: the SLURM array's task count, or WORLD_SIZE); above 1 "
                        "each shard writes its own store under STUDY/shards/, folded in by `probes merge`")
    p.add_argument("--run-id", help="id shared by all shards of a sharded run (default: SLURM_ARRAY_JOB_ID, "
                                    "TORCHELASTIC_RUN_ID, else a hash of the run's settings); the same id "
                                    "resumes the same shard stores")
    p.add_argument("--force", action="store_true", help="regenerate images that exist")
    p.add_argument("--presets-file", help="extra presets YAML")
    p.add_argument("--allow-custom-backends", action="store_true",
                   help="let the study folder's presets.yaml name Python backends (package.module:Class); "
                        "only for studies whose code you trust")
    p.add_argument("--device", help="force a device: cuda, cuda:1, mps, cpu")
    p.add_argument("--compare", help="two presets for the side-by-side sheet")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)

    p = sub.add_parser("merge", help="fold the shard stores under STUDY/shards/ into the study")
    p.add_argument("--study", required=True, help="study folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_merge)

    from .submit import add_submit_parser

    add_submit_parser(sub)  # probes submit: shard jobs on SLURM (or local processes) through submitit

    p = sub.add_parser("verify", help="regenerate a sample of a study's images and compare them with the stored files")
    p.add_argument("--study", required=True, help="study folder (only read)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--sample", type=int, default=20,
                     help="images per preset, at random but spread over the prompts (default 20; all if fewer)")
    how.add_argument("--all", action="store_true", help="every image of the study")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0), not the study seed")
    p.add_argument("--presets", help="comma-separated presets (default every preset with images)")
    p.add_argument("--device", help="regenerate on this device (cpu, cuda, cuda:1) instead of the recorded one")
    p.add_argument("--presets-file", help="presets YAML saying where the weights are on this machine (model, "
                                          "cache_dir, checkpoint_dir, checkpoints); other settings come from "
                                          "the study and may not change")
    p.add_argument("--allow-custom-backends", action="store_true",
                   help="import a custom backend (package.module:Class) the study recorded; only for studies "
                        "whose code you trust")
    p.add_argument("-o", "--output", help="write one row per image (CSV; .xlsx or .parquet by the suffix)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_verify)

    p = sub.add_parser("status", help="where each shard of a sharded run stands, and scores per metric")
    p.add_argument("--study", required=True, help="study folder")
    p.set_defaults(func=_status)

    p = sub.add_parser("score", help="automated scores (CLIP similarity, panel diversity) into the study")
    p.add_argument("--study", required=True, help="study folder")
    p.add_argument("--metrics", required=True,
                   help="comma-separated metrics: clip, diversity, biomedclip, xrv, fid, kid")
    p.add_argument("--presets", help="comma-separated presets (default all)")
    p.add_argument("--device", default="auto", help="auto (default), cuda, cuda:1 or cpu")
    p.add_argument("--batch-size", type=int, default=16, help="images (or panels) per batch and commit")
    p.add_argument("--clip-model", help="CLIP hub id or local folder (default openai/clip-vit-large-patch14)")
    p.add_argument("--biomedclip-model", help="BiomedCLIP: open_clip hf-hub id or local folder")
    p.add_argument("--xrv-model", help="torchxrayvision DenseNet weights name or local file")
    p.add_argument("--reference", help="folder of real reference images (fid: per preset and style)")
    p.add_argument("--fid-features", help="fid: feature extractor (Inception weights file, or 'clip' for CLIP features)")
    p.add_argument("--pin", action="append", metavar="METRIC=SHA256",
                   help="SHA-256 a scorer's weights must have (as stored in scores.scorer_digest); repeatable")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_score)

    p = sub.add_parser("xrv-weights", help="convert torchxrayvision's published weights to a safetensors file once")
    p.add_argument("name", nargs="?", default="densenet121-res224-all", help="torchxrayvision weights name")
    p.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    p.set_defaults(func=_xrv_weights)

    p = sub.add_parser("digests", help="print the SHA-256 pins of a preset's checkpoints")
    p.add_argument("preset")
    p.add_argument("--presets-file", help="extra presets YAML")
    p.set_defaults(func=_digests)

    p = sub.add_parser("presets", help="list presets and whether their weights are available here")
    p.add_argument("--presets-file", help="extra presets YAML")
    p.set_defaults(func=_presets)
    return parser


def main(argv=None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
