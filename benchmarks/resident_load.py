"""Time loading a 2D store's cases onto the training device (``semiseg.engine.data.load_resident``).

    python benchmarks/resident_load.py STORE [--cases 40] [--patch 256 256] [--repeat 3]

Loads the store's first ``--cases`` cases twice per repeat, as the engine does: the labeled
stream (image and label) and the unlabeled stream (image only); prints the best time of each, and
the time of the reference path it replaces (read image and label, ``ndimage.zoom`` each volume
with order 0, concatenate), after checking that both give the same arrays bit for bit. A store
is what the workflow's ``preprocess`` rule writes (``results/preprocessed/acdc/store.h5``).
Nothing is written.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from semiseg.data.store import Store
from semiseg.engine.data import load_resident


def reference(store: Store, case_ids, size) -> tuple[np.ndarray, np.ndarray]:
    """Every case read whole and zoomed on its own, then concatenated: the former loading path."""
    imgs, labs = [], []
    for cid in case_ids:
        image, label = store.read(cid)
        _, y, x = image.shape
        if (y, x) != tuple(size):
            f = (1, size[0] / y, size[1] / x)
            image, label = ndimage.zoom(image, f, order=0), ndimage.zoom(label, f, order=0)
        imgs.append(image.astype(np.float32))
        labs.append(label)
    return np.concatenate(imgs)[:, None], np.concatenate(labs)


def best(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store")
    p.add_argument("--cases", type=int, default=40, help="the store's first N cases (0: all)")
    p.add_argument("--patch", type=int, nargs=2, default=[256, 256])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)

    with Store(args.store) as store:
        ids = list(store.case_ids[: args.cases or None])
        n = sum(store.shape(c)[0] for c in ids)
        t_ref, (ref_img, ref_lab) = best(lambda: reference(store, ids, args.patch), args.repeat)
        t_lab, lab = best(lambda: load_resident(store, ids, 2, args.patch, "cpu", with_label=True), args.repeat)
        t_unl, unl = best(lambda: load_resident(store, ids, 2, args.patch, "cpu", with_label=False), args.repeat)
    same = (np.array_equal(lab.images.numpy(), ref_img) and np.array_equal(lab.labels.numpy(), ref_lab)
            and np.array_equal(unl.images.numpy(), ref_img) and unl.labels is None)
    print(f"{len(ids)} cases, {n} slices to {args.patch[0]}x{args.patch[1]} (best of {args.repeat})")
    print(f"reference (read both, zoom per volume)  {t_ref:6.2f} s")
    print(f"load_resident labeled stream            {t_lab:6.2f} s  ({t_ref / t_lab:.1f}x)")
    print(f"load_resident unlabeled stream          {t_unl:6.2f} s  ({t_ref / t_unl:.1f}x)")
    print(f"bit-identical to the reference: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
