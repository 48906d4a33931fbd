"""Selection (filter + balance) at pool scale: time and peak memory on synthetic label stores.

    python benchmarks/select_scale.py                    # 1M and 10M images x 1000 classes, top-10
    python benchmarks/select_scale.py --sizes 100000     # a quick look

Each store is written once under --work-dir (about 70 bytes per image; kept for reruns) in the
layout `noisystudent label` writes: uneven class sizes, confidences from Beta(4, 2), top-10 ids
and float16 probabilities. Each selection runs in a fresh process, so its peak RSS is its own;
`import_rss_bytes` is that process's RSS after imports, before it reads anything. Goals on 2
cores: 10M in <= 60 s and <= 2 GiB peak RSS, and 10M/1M time <= 12 (linear). Also records the
store's bytes per image against the official code's full fp32 vector (4 bytes x 1000 classes).
Writes benchmarks/results/select_scale.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))

from common import environment, write_result  # noqa: E402

from noisystudent.labels.store import STORE_FORMAT, shard_name, write_manifest  # noqa: E402

CLASSES, TOP_K, SHARD, SEED, TARGET_FRACTION = 1000, 10, 100_000, 0, 0.8

# Runs in its own process: measures one selection's time and peak RSS.
CHILD = """
import json, resource, sys, time
from pathlib import Path
from noisystudent.labels import LabelStore, select_from_store
store_dir, out, mode, classes, target = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
import_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
started = time.perf_counter()
stats = select_from_store(LabelStore(Path(store_dir)), Path(out), classes, 0.3, target, mode=mode)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "import_rss_bytes": import_rss, "selected": stats["selected"], "kept": stats["kept"]}))
"""


def synthetic_store(root: Path, n_images: int) -> Path:
    if (root / "manifest.json").is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    class_weights = rng.pareto(1.5, CLASSES) + 0.2  # uneven: some classes long, some short
    class_weights /= class_weights.sum()
    counts = []
    for index, start in enumerate(range(0, n_images, SHARD)):
        n = min(SHARD, n_images - start)
        argmax = rng.choice(CLASSES, n, p=class_weights).astype(np.int32)
        confidence = rng.beta(4, 2, n).astype(np.float32)
        others = rng.integers(0, CLASSES, (n, TOP_K)).astype(np.int32)
        others[:, 0] = argmax
        probs = np.sort(rng.dirichlet(np.ones(TOP_K), n).astype(np.float16), axis=1)[:, ::-1]
        ids = pc.binary_join_element_wise("img-", pc.cast(pa.array(np.arange(start, start + n)), pa.string()), "")
        table = pa.table({
            "id": ids, "argmax": argmax, "confidence": confidence,
            "topk_ids": pa.FixedSizeListArray.from_arrays(pa.array(others.reshape(-1)), TOP_K),
            "topk_probs": pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1), pa.float16()), TOP_K),
        })
        pq.write_table(table, root / shard_name(index))
        counts.append(n)
    write_manifest(root, {"format": STORE_FORMAT, "synthetic": True, "seed": SEED}, counts)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated pool sizes")
    parser.add_argument("--work-dir", type=Path, default=Path("runs") / "benchmarks" / "select_scale")
    args = parser.parse_args()
    runs, storage = [], {}
    for n_images in [int(s) for s in args.sizes.split(",")]:
        store = synthetic_store(args.work_dir / f"store-{n_images}", n_images)
        store_bytes = sum(p.stat().st_size for p in store.glob("shard-*.parquet"))
        storage[str(n_images)] = {"bytes_per_image": round(store_bytes / n_images, 1),
                                  "official_fp32_bytes_per_image": 4 * CLASSES}
        target = int(TARGET_FRACTION * n_images / CLASSES)
        for mode in ("top_confidence", "official"):
            out = args.work_dir / f"selection-{n_images}-{mode}.parquet"
            result = subprocess.run([sys.executable, "-c", CHILD, str(store), str(out), mode, str(CLASSES), str(target)],
                                    capture_output=True, text=True, check=True)
            measured = json.loads(result.stdout.strip().splitlines()[-1])
            runs.append({"n_images": n_images, "mode": mode, "images_per_class": target, **measured})
            print(runs[-1], flush=True)
    ratios = {}
    sizes = sorted({r["n_images"] for r in runs})
    if len(sizes) >= 2:
        for mode in ("top_confidence", "official"):
            small, large = (next(r for r in runs if r["n_images"] == s and r["mode"] == mode) for s in (sizes[0], sizes[-1]))
            ratios[mode] = round(large["seconds"] / small["seconds"], 2)
    write_result("select_scale", {"benchmark": "select_scale", **environment(), "seed": SEED, "classes": CLASSES,
                                  "top_k": TOP_K, "shard_size": SHARD, "threshold": 0.3, "runs": runs,
                                  "time_ratio_largest_to_smallest": ratios, "storage": storage})


if __name__ == "__main__":
    main()
