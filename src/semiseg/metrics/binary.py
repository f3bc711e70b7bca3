"""Per-case segmentation metrics with medpy semantics.

The four metrics are medpy's (``medpy.metric.binary``), computed on whole volumes:

- ``dice``    -- ``dc(pred, gt)``, in [0, 1];
- ``jaccard`` -- ``jc(pred, gt)``, in [0, 1];
- ``hd95``    -- ``hd95(pred, gt, voxelspacing=spacing)``: 95th percentile of the pooled surface
  distances in both directions;
- ``asd``     -- ``asd(pred, gt, voxelspacing=spacing)``: medpy's *directed* average surface
  distance, from the prediction's surface to the reference's (not the symmetric ``assd``), which is
  what the semi-supervised literature's evaluation scripts call.

Distances are in the units of ``spacing`` (mm for a store with physical spacing, voxels where the
spacing is 1.0). Surfaces use medpy's default connectivity 1.

medpy is undefined on empty masks (``hd95``/``asd`` raise ``RuntimeError``; with numpy 2
``dc`` of two empty masks returns ``nan`` with a warning while ``jc`` returns 1.0), so
:func:`class_metrics` decides those cases itself, by one explicit convention:

================  ======  =======  =================  =================
case              dice    jaccard  hd95               asd
================  ======  =======  =================  =================
both empty        1       1        0                  0
exactly one empty 0       0        volume diagonal    volume diagonal
================  ======  =======  =================  =================

The volume diagonal is the largest distance two voxel centres of that image can have, in the
units of ``spacing``. Every row also records ``pred_empty`` and ``gt_empty`` so that other
conventions can be recomputed from ``metrics.csv`` (see ``docs/metrics.md``).

Speed: ``hd95`` and ``asd`` need Euclidean distance transforms, which medpy computes over the
whole volume (about 1 s per Left Atrium case). :func:`class_metrics` works on the union
bounding box of the two masks only, padded by one background voxel on every side
(:func:`union_box`). That changes no value: every surface voxel of either mask lies in the box,
the erosion that finds a surface sees background beyond the box as it does in the whole volume
(outside the box both masks are empty, and scipy's erosion treats the array's outside as
background), the distance from a box voxel to the nearest surface voxel is the same in the box as
in the volume (that voxel is in the box), and the box keeps the voxels' raster order, so medpy
pools the same distances in the same order. medpy's ``hd95`` and ``asd`` would also run three
distance transforms between them (``asd`` repeats the prediction-to-reference one) and erode each
mask three times; :func:`surface_distances` runs each transform and each erosion once, with
medpy's own steps, and both metrics are read from its two arrays; :func:`overlap` counts Dice and
Jaccard as medpy does. No medpy function is called, so evaluation does not import it (medpy is a
test dependency: the tests check equality with medpy on the whole volume, on random and real
masks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

__all__ = ["case_metrics", "class_metrics", "overlap", "surface_distances", "union_box", "volume_diagonal"]


def _normalise_spacing(spacing: float | Sequence[float], ndim: int) -> tuple[float, ...]:
    """Return ``spacing`` as ``ndim`` positive finite floats (a scalar applies to every axis)."""
    if np.ndim(spacing) == 0:
        values = (float(spacing),) * ndim  # type: ignore[arg-type]
    else:
        values = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
        if len(values) != ndim:
            raise ValueError(
                f"spacing has {len(values)} values but the masks have {ndim} dimensions; "
                "give one spacing per axis, in array axis order (z, y, x for a volume)"
            )
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be positive and finite, got {values}")
    return values


def overlap(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Dice and Jaccard of two boolean masks, at least one non-empty, as medpy's ``dc`` and ``jc``
    compute them (the same counts and the same float operations, so the same bits; the tests
    check it): ``2 |P ∩ G| / (|P| + |G|)`` and ``|P ∩ G| / |P ∪ G|``. Computed here, not called, so
    that an evaluate job does not import medpy (and scipy.stats with it: a second per job).

    >>> overlap(np.array([1, 1, 0, 0], bool), np.array([0, 1, 1, 0], bool))
    (0.5, 0.3333333333333333)
    """
    intersection = np.count_nonzero(pred & gt)
    dice = float(2.0 * intersection / float(np.count_nonzero(pred) + np.count_nonzero(gt)))
    jaccard = float(intersection) / float(np.count_nonzero(pred | gt))
    return dice, jaccard


def volume_diagonal(shape: Sequence[int], spacing: float | Sequence[float]) -> float:
    """The largest distance between two voxel centres of an image, in units of ``spacing``.

    This is ``sqrt(sum(((n_i - 1) * s_i) ** 2))``: no surface distance measured in that image can
    exceed it, which makes it the penalty :func:`class_metrics` gives a missed or hallucinated
    structure. Example: shape ``(10, 256, 256)`` with spacing ``(10, 1.5, 1.5)`` gives
    ``sqrt(90**2 + 382.5**2 + 382.5**2) = 548.46``.
    """
    shape = tuple(int(n) for n in shape)
    if not shape or any(n < 1 for n in shape):
        raise ValueError(f"shape must have at least one axis and no empty axis, got {shape}")
    sizes = _normalise_spacing(spacing, len(shape))
    return float(math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(shape, sizes))))


def surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """The distances from each surface voxel of ``pred`` to the nearest surface voxel of ``gt``,
    and from each of ``gt``'s to ``pred``'s, in raster order (both masks boolean, non-empty).

    medpy's ``__surface_distances`` step by step (a mask's surface is the mask minus its erosion
    by the connectivity-1 structure; distances are the Euclidean distance transform of the other
    surface's complement, with ``spacing`` as sampling), once per direction: ``hd95`` is the 95th
    percentile of both arrays pooled (first direction first, as medpy stacks them) and ``asd`` the
    mean of the first.
    """
    footprint = ndimage.generate_binary_structure(pred.ndim, 1)
    sampling = np.asarray(spacing, dtype=np.float64)
    pred_border = pred ^ ndimage.binary_erosion(pred, structure=footprint, iterations=1)
    gt_border = gt ^ ndimage.binary_erosion(gt, structure=footprint, iterations=1)
    to_gt = ndimage.distance_transform_edt(~gt_border, sampling=sampling)[pred_border]
    to_pred = ndimage.distance_transform_edt(~pred_border, sampling=sampling)[gt_border]
    return to_gt, to_pred


def union_box(pred: np.ndarray, gt: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of ``pred | gt`` (both boolean, same shape, not both empty), as slices.

    :func:`class_metrics` scores the box padded by one zero voxel on each side
    (``np.pad(mask[box], 1)``), which gives medpy's values exactly (see the module docstring).
    """
    union = pred | gt
    box = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        hit = np.flatnonzero(union.any(axis=other))
        if not hit.size:
            raise ValueError("both masks are empty: there is no box")
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def class_metrics(
    pred: np.ndarray, gt: np.ndarray, spacing: float | Sequence[float]
) -> dict[str, float | bool]:
    """Dice, Jaccard, HD95 and ASD of one binary prediction against its reference.

    Parameters
    ----------
    pred, gt:
        Boolean masks of the same shape (a whole volume, e.g. ``label_map == k``).
    spacing:
        Physical size of a voxel along each array axis (z, y, x for a volume), or one number for
        all axes. Distances are returned in its units.

    Returns
    -------
    dict
        ``dice``, ``jaccard`` (fractions in [0, 1]), ``hd95``, ``asd`` (distances) as floats and
        ``pred_empty``, ``gt_empty`` as bools.

    Notes
    -----
    When both masks are non-empty the values are exactly medpy's ``dc``, ``jc``, ``hd95`` and
    ``asd`` (``asd`` is directed: prediction surface to reference surface; connectivity 1).
    medpy cannot score an empty mask, so this function applies one convention:

    - both empty: dice 1, jaccard 1, hd95 0, asd 0 -- nothing to find and nothing found;
    - exactly one empty: dice 0, jaccard 0, and hd95 = asd = :func:`volume_diagonal` of the
      image, the largest distance possible in it, so that a missed (or hallucinated) structure is
      penalised rather than scored with a perfect distance.

    SSL4MIS-style evaluation code (its widely copied ``calculate_metric_percase`` and 3D
    ``cal_metric``) instead scores the distance of an empty prediction as 0 -- the best possible
    value -- so a network that predicts nothing for a structure improves its mean HD95. We do not
    follow it; ``pred_empty`` and ``gt_empty`` are returned (and written to ``metrics.csv``) so
    that the literature's convention can be recomputed from the file. See ``docs/metrics.md``.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    for name, mask in (("pred", pred), ("gt", gt)):
        if mask.dtype != np.bool_:
            raise TypeError(
                f"{name} must be a boolean mask, got dtype {mask.dtype}; "
                "select one class first, e.g. label_map == k"
            )
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    if pred.ndim == 0 or pred.size == 0:
        raise ValueError(f"masks must have at least one voxel, got shape {pred.shape}")
    sizes = _normalise_spacing(spacing, pred.ndim)

    pred_empty = not pred.any()
    gt_empty = not gt.any()
    if pred_empty and gt_empty:
        dice, jaccard, hd95, asd = 1.0, 1.0, 0.0, 0.0
    elif pred_empty or gt_empty:
        worst = volume_diagonal(pred.shape, sizes)
        dice, jaccard, hd95, asd = 0.0, 0.0, worst, worst
    else:
        box = union_box(pred, gt)
        pred_box, gt_box = np.pad(pred[box], 1), np.pad(gt[box], 1)
        dice, jaccard = overlap(pred_box, gt_box)
        to_gt, to_pred = surface_distances(pred_box, gt_box, sizes)
        hd95 = float(np.percentile(np.hstack((to_gt, to_pred)), 95))
        asd = float(to_gt.mean())
    return {
        "dice": dice,
        "jaccard": jaccard,
        "hd95": hd95,
        "asd": asd,
        "pred_empty": bool(pred_empty),
        "gt_empty": bool(gt_empty),
    }


def _foreground_classes(
    class_names: Mapping[int, str] | Sequence[str],
) -> list[tuple[int, str]]:
    """``(index, name)`` of every foreground class (index > 0), by index."""
    if isinstance(class_names, Mapping):
        items = []
        for key, name in class_names.items():
            if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
                raise TypeError(
                    "class_names must map class index (int) to name (str), got key "
                    f"{key!r}; invert a {{name: index}} labels mapping first"
                )
            items.append((int(key), name))
    elif isinstance(class_names, Sequence) and not isinstance(class_names, (str, bytes)):
        items = list(enumerate(class_names))
    else:
        raise TypeError(
            "class_names must be a {index: name} mapping or a list of names indexed by class, "
            f"got {type(class_names).__name__}"
        )
    for index, name in items:
        if not isinstance(name, str) or not name:
            raise TypeError(f"class {index} must have a non-empty str name, got {name!r}")
        if index < 0:
            raise ValueError(f"class indices must be >= 0, got {index}")
    foreground = sorted((index, name) for index, name in items if index != 0)
    if not foreground:
        raise ValueError("class_names lists no foreground class (index > 0)")
    names = [name for _, name in foreground]
    if len(set(names)) != len(names):
        raise ValueError(f"foreground class names must be unique, got {names}")
    return foreground


def case_metrics(
    pred_label: np.ndarray,
    gt_label: np.ndarray,
    class_names: Mapping[int, str] | Sequence[str],
    spacing: float | Sequence[float],
    *,
    case: str | None = None,
) -> list[dict[str, object]]:
    """Metrics of every foreground class of one case.

    Parameters
    ----------
    pred_label, gt_label:
        Integer label maps of the same shape (0 is background).
    class_names:
        ``{index: name}`` or a list of names indexed by class (``["background", "RV", ...]``).
        Index 0 is background and is never scored; every other listed class gets a row, also when
        it is absent from both maps (then it scores as "both empty").
    spacing:
        Voxel size per axis, as for :func:`class_metrics`.
    case:
        Case id; when given each row starts with ``"case"``, as :func:`write_metrics_csv` needs.

    Returns
    -------
    list of dict
        One row per foreground class in index order: ``case`` (if given), ``class``,
        ``class_name`` and the entries of :func:`class_metrics`.

    Raises
    ------
    ValueError
        If either map holds a label that is neither background nor a listed class: that is a
        mismatch between the network's classes and the dataset's, not something to score.
    """
    pred_label = np.asarray(pred_label)
    gt_label = np.asarray(gt_label)
    for name, label in (("pred_label", pred_label), ("gt_label", gt_label)):
        if not np.issubdtype(label.dtype, np.integer):
            raise TypeError(f"{name} must be an integer label map, got dtype {label.dtype}")
    if pred_label.shape != gt_label.shape:
        raise ValueError(
            f"pred_label and gt_label shapes differ: {pred_label.shape} vs {gt_label.shape}"
        )
    classes = _foreground_classes(class_names)
    known = {0, *(index for index, _ in classes)}
    for name, label in (("pred_label", pred_label), ("gt_label", gt_label)):
        unknown = sorted(set(np.unique(label).tolist()) - known)
        if unknown:
            raise ValueError(
                f"{name} contains labels {unknown} that are not in class_names "
                f"(known: {sorted(known)})"
            )

    rows: list[dict[str, object]] = []
    for index, name in classes:
        row: dict[str, object] = {} if case is None else {"case": str(case)}
        row["class"] = index
        row["class_name"] = name
        row.update(class_metrics(pred_label == index, gt_label == index, spacing))
        rows.append(row)
    return rows
