"""Row 8 of docs/benchmarks.md: CLIP scoring throughput, batched vs one image at a time.

    OMP_NUM_THREADS=1 python benchmarks/scoring.py [--images 64] [--batch-size 16] [--repeats 5] [--threads 1]

The tiny random CLIP (probes.scorers.tiny) scores N 64 px PNGs with catalog prompt texts
through ``ClipScorer.score``: in batches of B against one image per call. The two sides run
interleaved (A B A B ...) after a warm-up round; figures are medians over repeats (the ratio
is the median of the paired ratios). Then one end-to-end ``score_study`` run at batch B on a
study holding those images (scorer load, hashing, commits per batch) for the note. Kept apart
from benchmarks/cpu.py, whose row list its smoke test fixes at 1-7; the printed row goes in the
"Scoring benchmark" section of docs/benchmarks.md, which cpu.py's --markdown leaves alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def synthetic_study(folder: Path, n: int):
    """A study with n random 64 px images in panels of 4, prompts from the oncology catalog."""
    import numpy as np
    from PIL import Image

    from probes import catalog
    from probes.store import Study, now

    prompts = catalog.expand(catalog.load_catalog("oncology")).head(n // 4).reset_index(drop=True)
    rng = np.random.default_rng(0)
    with Study(folder) as st:
        st.add_prompts(prompts)
        st.register_preset("bench", "tiny", {"size": 64})
        for p, (pid, text) in enumerate(zip(prompts["prompt_id"], prompts["text"], strict=True)):
            for index in range(4):
                image = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
                sha, file = st.write_image(image)
                st.add_image({"prompt_id": pid, "text": text, "preset": "bench", "study_seed": 0,
                              "image_index": index, "seed": 4 * p + index, "sha256": sha, "file": file,
                              "width": 64, "height": 64, "created_at": now()})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from probes.scorers import ImageItem, create_scorer
    from probes.scorers.tiny import write_tiny_clip
    from probes.scores import score_study
    from probes.store import Study

    before = load()
    with tempfile.TemporaryDirectory(prefix="medprobe-bench-score-") as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("XDG_CACHE_HOME", str(tmp / "cache"))  # digests of the bench model stay here
        model = write_tiny_clip(tmp / "tiny-clip")
        synthetic_study(tmp / "study", args.images)
        with Study(tmp / "study", create=False) as st:  # what score_study hands its scorers
            items = [ImageItem(r.sha256, st.resolve(r.file), r.text, r.prompt_id, r.preset, int(r.study_seed))
                     for r in st.manifest().itertuples()]
        assert len(items) == args.images, len(items)
        scorer = create_scorer("clip", {"model": str(model), "device": "cpu"})

        def run(size: int) -> float:
            started = time.perf_counter()
            for start in range(0, len(items), size):
                scorer.score(items[start:start + size])
            return time.perf_counter() - started

        times = {"batched": [], "single": []}
        for r in range(-1, args.repeats):  # one warm-up round, then interleaved
            for name, size in (("batched", args.batch_size), ("single", 1)):
                seconds = run(size)
                if r >= 0:
                    times[name].append(seconds)
        ratio = statistics.median(s / b for s, b in zip(times["single"], times["batched"], strict=True))
        batched, single = statistics.median(times["batched"]), statistics.median(times["single"])
        started = time.perf_counter()
        counts = score_study(tmp / "study", ["clip"], device="cpu", batch_size=args.batch_size, progress=False,
                             scorer_settings={"clip": {"model": str(model)}})
        end_to_end = time.perf_counter() - started
        assert counts["clip"]["added"] == args.images
    after = load()
    n = args.images
    print(f"| 8 | CLIP scoring (tiny random CLIP, {n} images of 64 px): batch {args.batch_size} / one image "
          f"a call | {n / batched:.0f} vs {n / single:.0f} images/s ({ratio:.2f}x) | report | - | median "
          f"{batched * 1000:.0f} ms vs {single * 1000:.0f} ms for {n} images (ClipScorer.score: PNG decode, "
          f"preprocessing, tokenizing, forward); end to end `score_study` at batch {args.batch_size} "
          f"(scorer load, weight hash, {-(-n // args.batch_size)} commits): {end_to_end:.2f} s; "
          f"{args.threads} torch thread(s), median of {args.repeats} after 1 warm-up; load average before "
          f"{before}, after {after} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
