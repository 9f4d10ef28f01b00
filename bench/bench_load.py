"""Load time of a large NVIDIA pickle versus its safetensors cache copy.

    python bench/bench_load.py [--resolution 1024] [--repeats 3]

Writes two NVIDIA pickles of a config-f-like generator (random weights; 1024 px has about 30 M parameters) into
a temporary folder: one with G_ema only, and one shaped like a training snapshot as the official code writes it
(G, D and G_ema, with D given as many parameters as G). It times `read_generator` on each pickle and
`read_generator_cached` once the cache copy exists; the cached time includes hashing the pickle to find the copy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=1024, help="Generator resolution in px (default 1024).")
    parser.add_argument("--repeats", type=int, default=3, help="Timed loads per format; the median is shown.")
    args = parser.parse_args()

    from stylebridge.models.checkpoint_writers import _record, make_generator, write_nvidia_pickle
    from stylebridge.models.checkpoints import read_generator, read_generator_cached
    from stylebridge.models.safe_pickle import PersistentWriterRecord, dump_persistent, module_state
    from stylebridge.models.stylegan2 import StyleGAN2Config

    def timed(func) -> float:
        samples = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            func()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    config = StyleGAN2Config(img_resolution=args.resolution)
    g_ema = make_generator(config, seed=0)
    g = make_generator(config, seed=1)
    d_parameters = {f"p{index}": tensor.clone() for index, tensor in enumerate(g.state_dict().values())}
    discriminator = PersistentWriterRecord("Discriminator", module_state({}, {}, parameters=d_parameters))

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        g_ema_only = write_nvidia_pickle(g_ema, folder / "g_ema.pkl")
        snapshot = folder / "snapshot.pkl"
        with open(snapshot, "xb") as file:
            dump_persistent({"G": _record(g), "D": discriminator, "G_ema": _record(g_ema), "augment_pipe": None,
                             "training_set_kwargs": {}}, file)
        for label, path in (("G_ema only", g_ema_only), ("training snapshot (G, D, G_ema)", snapshot)):
            read_generator_cached(path, folder / "cache")  # Writes the cache copy.
            pickle_seconds = timed(lambda path=path: read_generator(path))
            cached_seconds = timed(lambda path=path: read_generator_cached(path, folder / "cache"))
            rows.append((label, path.stat().st_size / 1e6, pickle_seconds, cached_seconds))

    print(f"Load time of a {args.resolution} px StyleGAN2 generator, median of {args.repeats}")
    print("| pickle | size (MB) | pickle (s) | safetensors cache, hash + load (s) | speed-up |")
    print("|---|---|---|---|---|")
    for label, size_mb, pickle_seconds, cached_seconds in rows:
        print(f"| {label} | {size_mb:.0f} | {pickle_seconds:.2f} | {cached_seconds:.2f} | "
              f"{pickle_seconds / cached_seconds:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
