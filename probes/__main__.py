"""``python -m probes``: a thin command line over the probes package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import catalog as cat
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
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ProbeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
