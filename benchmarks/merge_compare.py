"""The merge side by side with an earlier medprobe's, on the same shard stores, in one run.

    python benchmarks/merge_compare.py [--rows 100000] [--baseline b5175d6] [--repeats 2]

Builds 4 shard stores of ``--rows`` manifest rows once (benchmark row 7b's stores: small real
PNGs with their medprobe text chunks), then, alternating, merges a fresh copy of them with
``probes.merge.merge`` of this checkout and with ``probes.shards.merge`` of the ``--baseline``
commit (where the merge lived before issue 22; its ``probes/shards.py`` loaded from git into this
checkout's package, so only the merge differs). Prints each time, the medians and their ratio (baseline / now: above 1, now is faster).
Needs a git checkout; drives ``merge`` only.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))


def baseline_shards(commit: str):
    """``probes.shards`` as it was at ``commit``, imported inside today's ``probes`` package."""
    source = subprocess.run(["git", "show", f"{commit}:probes/shards.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("probes._shards_baseline", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "probes"
    sys.modules[spec.name] = module  # dataclasses look their module up
    exec(compile(source, f"{commit}:probes/shards.py", "exec"), module.__dict__)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--baseline", default="b5175d6", help="the commit to compare with (default: before issue 21)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    from benchmarks.cpu import load, shard_store
    from probes import shards
    from probes.merge import merge as merge_now
    from probes.store import Study

    old = baseline_shards(args.baseline)
    times: dict[str, list[float]] = {"baseline": [], "now": []}
    with tempfile.TemporaryDirectory(prefix="medprobe-merge-compare-") as tmp:
        tmp = Path(tmp)
        source = tmp / "source"
        Study(source).close()
        built = time.perf_counter()
        for k in range(4):
            shard_store(shards.shard_path(source, "bench", k), k, args.rows // 4, 4)
        print(f"built 4 shard stores of {args.rows:,} rows in {time.perf_counter() - built:.1f} s; "
              f"load {load()}", flush=True)
        for r in range(args.repeats):
            for name, merge in (("baseline", old.merge), ("now", merge_now))[:: 1 if r % 2 == 0 else -1]:
                study = tmp / f"{name}-{r}"
                shutil.copytree(source, study)
                os.sync()
                started = time.perf_counter()
                result = merge(study, progress=False)
                seconds = time.perf_counter() - started
                if result.added != args.rows or result.refused or result.skipped:
                    raise SystemExit(f"{name}: the merge gave {result}")
                times[name].append(seconds)
                print(f"{name:>8} ({args.baseline if name == 'baseline' else 'this checkout'}): {seconds:.2f} s "
                      f"({args.rows / seconds:,.0f} rows/s), load {load()}", flush=True)
                shutil.rmtree(study)
    a, b = statistics.median(times["baseline"]), statistics.median(times["now"])
    print(f"median: baseline {a:.2f} s, now {b:.2f} s; baseline / now = {a / b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
