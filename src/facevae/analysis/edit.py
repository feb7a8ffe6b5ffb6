"""Edit a face's attributes and show it before and after.

``edit(run, index=17, settings={"Smiling": 1, "Bangs": 0})`` or ``edit(run, image="me.jpg", ...)``.

The face: ``index`` is a position in the run's test split (0 = its first image, whose attributes
are then known); ``image`` is a picture file, aligned like CelebA's faces where a face is found in it (five
landmarks warped to CelebA's template, :mod:`facevae.data.align`) and centre-cropped where not,
then cropped and resized exactly as the dataset's preparation did (:func:`facevae.data.prepare.decode_face`,
with the crop the dataset was made with), then resized to the model's image size. Its attributes are unknown: for a conditional
model its condition is the most common value of each attribute in the training split, corrected
by ``given`` ({"Male": 1}) where the user knows better.

Each set attribute is changed one of two ways:

* **through the condition** (an attribute of a conditional model's condition): the face is
  encoded with its original condition to z = the posterior mean, and z is decoded with the edited
  condition; z does not move.
* **along a latent direction** (an unconditional model, or an attribute of the data that a
  conditional model is not conditioned on): the attribute's direction is the difference of class
  means of the posterior means, d = mean(μ | a=1) − mean(μ | a=0), over the test split (over the
  training split when the test split lacks a class). With u = d/|d|, setting a=1 moves z so that
  its projection ⟨z, u⟩ lands on the projection of the positive class mean, setting a=0 on that of
  the negative class mean: alpha = ⟨m_target − z, u⟩ and z' = z + alpha·u. For a face at the
  negative class mean this is exactly z + d, the move from the negative to the positive class mean;
  a face that already has the attribute barely moves. Several attributes are set together by the
  smallest move in the span of their directions that puts every projection on its target
  (their directions are generally not orthogonal).

The strength strip decodes t = 0 (before: the reconstruction), ..., 1 (after) of the edit: z + t·δ
and/or c + t·(c' − c) (conditions between 0 and 1 interpolate, in both condition modes).

Writes ``RUN/analysis/edit_<test17|file stem>_<Smiling1_Bangs0>.png`` and ``.json``::

    {"source": {"index": 17, "row": 123, "image_id": ...} | {"image": "me.jpg", "face_found": true, "alignment": ...},
     "settings": {...}, "changes": [{"attribute": "Smiling", "before": 0 | null, "after": 1,
       "method": "condition" | "latent direction", "direction_norm": 1.3, "split": "test",
       "class_counts": [n0, n1], "projection_before": ..., "projection_target": ..., "alpha": ...}],
     "latent_shift_norm": |z' − z|, "z_before": [...], "z_after": [...], "image_change_mse": ...,
     "strengths": [0, 0.25, ...], "png": ..., "json": ...}
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from facevae.analysis.sample import check_settings, settings_slug
from facevae.analysis.shared import MAX_STEPS, as_run, check_at_most, image_id, run_label, write_result
from facevae.common.grids import abbreviate_attribute, save_comparison_grid
from facevae.data.align import PictureError, align_face
from facevae.data.prepare import CELEBA_CROP
from facevae.training.rundir import Run

DIFF_GAIN = 4.0  # the difference row is |change| × this, so small edits are visible


# --- the face -------------------------------------------------------------------------------------------
def dataset_crop(run: Run) -> int:
    """The centre crop the dataset was prepared with ('centre crop 148, ...'), CelebA's 148 otherwise."""
    found = re.search(r"centre crop (\d+)", run.data.packed.meta.preprocessing or "")
    return int(found.group(1)) if found else CELEBA_CROP


def load_image(run: Run, path: str | Path, align: bool = True) -> tuple[torch.Tensor, dict]:
    """A picture file as the model sees the data: (1, 3, S, S) float in [0, 1], and how it was framed
    (``face_found``, ``alignment``): aligned to CelebA's five-point template where a face is found, centre-
    cropped otherwise, then cropped and resized as the dataset was (:mod:`facevae.data.align`)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    meta = run.data.packed.meta
    try:
        face = align_face(path.read_bytes(), meta.height, crop=dataset_crop(run), align=align)
    except PictureError as exc:
        raise ValueError(f"{path}: {exc}") from None
    x = torch.from_numpy(np.array(face.image)).permute(2, 0, 1)[None]  # a writable copy
    x, _ = run.data.prepare_batch((x, torch.zeros(1, 0)), train=False)
    return x, face.describe()


def face_of(run: Run, image: str | Path | None = None, index: int | None = None,
            given: dict[str, int] | None = None) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """(x (1, C, H, W), full attribute row (1, A) or None when unknown, a description of the source)."""
    if (image is None) == (index is None):
        raise ValueError("give exactly one face: an image file (--image PATH) or a test-split position (--index I)")
    given = check_settings(run, given or {})
    if index is not None:
        total = len(run.data.indices("test"))
        if not 0 <= int(index) < total:
            raise ValueError(f"--index {index} out of range: the test split has {total} images (0 to {total - 1})")
        x, y, rows = run.test_batch(1, int(index))
        source = {"index": int(index), "row": int(rows[0]), "image_id": image_id(run, int(rows[0]))}
        known = True
    else:
        x, framing = load_image(run, image)
        y = None
        source = {"image": str(image), **framing}
        known = False
    if y is None and (run.conditional or given):
        # a picture's attributes are unknown: the training split's most common values, then what the user says
        train = run.data.part_attributes("train")
        y = torch.from_numpy((train.mean(0) >= 0.5).astype(np.float32))[None] if len(train) \
            else torch.zeros(1, len(run.data.attribute_names))
        if run.conditional:
            source["condition"] = "the most common value of each attribute in the training split" + \
                (", except the given ones" if given else "")
    if given:
        y = y.clone()
        for name, value in given.items():
            y[0, run.data.attribute_names.index(name)] = float(value)
        source["given"] = given
    source["attributes_known"] = known
    return x, y, source


# --- latent directions --------------------------------------------------------------------------------------
class Directions:
    """Attribute directions in latent space: difference of class means of posterior means."""

    def __init__(self, run: Run, split: str = "test"):
        self.run, self.split = run, split
        self._parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _part(self, part: str):
        if part not in self._parts:
            encoded = self.run.encode(part)
            self._parts[part] = (encoded.codes(), encoded.attributes)
        return self._parts[part]

    def __call__(self, attribute: str) -> dict:
        """{direction (D,), mean_pos, mean_neg, counts [n0, n1], split} for ``attribute``."""
        column = self.run.data.attribute_names.index(attribute)
        tried = []
        for part in dict.fromkeys([self.split, "train"]):
            mu, attrs = self._part(part)
            has = attrs[:, column] > 0
            counts = [int((~has).sum()), int(has.sum())]
            tried.append(f"{part}: {counts[0]} without, {counts[1]} with")
            if min(counts) == 0:
                continue
            pos, neg = mu[has].mean(0), mu[~has].mean(0)
            d = pos - neg
            if not np.linalg.norm(d) > 0:
                raise ValueError(f"{attribute}: both classes have the same mean latent code; no direction to move along")
            return {"direction": d, "mean_pos": pos, "mean_neg": neg, "counts": counts, "split": part}
        raise ValueError(f"{attribute}: cannot find its latent direction, it needs images with and without it "
                         f"({'; '.join(tried)})")


def latent_edit(z: np.ndarray, found: list[dict], targets: list[int]) -> tuple[np.ndarray, list[dict]]:
    """The smallest move δ in the span of the directions that puts each projection ⟨z+δ, u_i⟩ on the
    projection of the target class mean; returns δ and per-attribute numbers."""
    U = np.stack([f["direction"] / np.linalg.norm(f["direction"]) for f in found], 1).astype(np.float64)  # (D, k)
    target = np.array([float(np.dot(f["mean_pos"] if t else f["mean_neg"], U[:, i]))
                       for i, (f, t) in enumerate(zip(found, targets))])
    current = U.T @ z.astype(np.float64)
    coef = np.linalg.pinv(U.T @ U) @ (target - current)
    delta = U @ coef
    info = [{"direction_norm": float(np.linalg.norm(f["direction"])), "split": f["split"], "class_counts": f["counts"],
             "projection_before": float(current[i]), "projection_target": float(target[i]),
             "alpha": float(target[i] - current[i])} for i, f in enumerate(found)]
    return delta.astype(np.float32), info


# --- the edit -------------------------------------------------------------------------------------------------
def _change_text(name: str, before: int | None, after: int) -> str:
    return f"{abbreviate_attribute(name)} {'?' if before is None else before}→{after}"


def _conditions(run: Run, y: torch.Tensor | None, edits: dict[str, int]):
    """A conditional model's condition before and after the edits through it (None, None otherwise)."""
    if not run.conditional:
        return None, None
    edited = y.clone()
    for name, value in edits.items():
        edited[0, run.data.attribute_names.index(name)] = float(value)
    return run.condition_of(y), run.condition_of(edited)


def _changes(run: Run, y, source: dict, settings: dict[str, int], through_condition: list[str]) -> list[dict]:
    names, changes = run.data.attribute_names, []
    for a in settings:
        known = y is not None and (source["attributes_known"] or a in source.get("given", {}))
        before = int(y[0, names.index(a)]) if known else None
        changes.append({"attribute": a, "before": before, "after": settings[a],
                        "method": "condition" if a in through_condition else "latent direction"})
    return changes


@torch.no_grad()
def edit(run: Run | str | os.PathLike, image: str | Path | None = None, index: int | None = None,
         settings: dict[str, int] | None = None, steps: int = 5, given: dict[str, int] | None = None, direction_split: str = "test") -> dict:
    """Edit one face (a test-split position or an image file); write the sheet and JSON; return the JSON dict."""
    run = as_run(run)
    settings = check_settings(run, settings or {})
    if not settings:
        raise ValueError("nothing to edit: give the attributes to change, e.g. --set Smiling=1")
    if steps < 2:
        raise ValueError(f"--steps must be at least 2, got {steps}")
    check_at_most("steps", steps, MAX_STEPS, "the strengths of one strip")
    if direction_split not in ("test", "train"):
        raise ValueError(f"direction split must be 'test' or 'train', got {direction_split!r}")
    x, y, source = face_of(run, image, index, given)
    model = run.model
    through_condition = [a for a in settings if run.conditional and a in run.condition_names]
    through_latent = [a for a in settings if a not in through_condition]
    c_before, c_after = _conditions(run, y, {a: settings[a] for a in through_condition})
    z = model.encode(x, c_before).codes()[0]
    changes = _changes(run, y, source, settings, through_condition)
    delta = np.zeros(model.latent_dim, np.float32)
    if through_latent:
        directions = Directions(run, direction_split)
        found = [directions(a) for a in through_latent]
        delta, info = latent_edit(z.numpy(), found, [settings[a] for a in through_latent])
        for change in changes:
            if change["method"] == "latent direction":
                change.update(info[through_latent.index(change["attribute"])])
    delta_t = torch.from_numpy(delta)

    strengths = torch.linspace(0, 1, steps)
    zs = z[None] + strengths[:, None] * delta_t[None]
    cs = None if c_before is None else c_before + strengths[:, None] * (c_after - c_before)
    strip = model.decode(zs, cs).image()
    before_img, after_img = strip[:1], strip[-1:]

    diff_recon = ((before_img - x).abs().mean(1, keepdim=True) * DIFF_GAIN).clamp(0, 1)  # (1, 1, H, W) grey
    diff_edit = ((strip - before_img).abs().mean(1, keepdim=True) * DIFF_GAIN).clamp(0, 1)
    change_rows = "\n".join(_change_text(c["attribute"], c["before"], c["after"]) for c in changes)
    col_labels = ["input"] + [("before · " if i == 0 else "after · " if i == steps - 1 else "") + f"t={float(t):.2f}"
                              for i, t in enumerate(strengths)]
    what = f"test {source['index']}" if "index" in source else Path(str(image)).name
    methods = []
    if through_condition:
        methods.append(f"{', '.join(through_condition)} through the condition (z fixed)")
    if through_latent:
        norms = ", ".join(f"{c['attribute']} |d|={c['direction_norm']:.2f} ({c['split']})"
                          for c in changes if c["method"] == "latent direction")
        methods.append(f"along latent directions, difference of class means of posterior means: {norms}")
    title = (f"{run_label(run)}: edit of {what} — {'; '.join(methods)}. Columns: the input, then the edit at "
             f"strength t from 0 (before: the reconstruction) to 1 (after)")
    out = run.analysis_dir
    face_slug = f"test{source['index']}" if "index" in source else re.sub(r"[^A-Za-z0-9]+", "-", Path(str(image)).stem)
    stem = f"edit_{face_slug}_{settings_slug(settings)}"
    png, json_path = out / f"{stem}.png", out / f"{stem}.json"
    save_comparison_grid([torch.cat([x, strip]), torch.cat([diff_recon, diff_edit])],
                         [change_rows, f"|difference| ×{DIFF_GAIN:g}\n(input: vs recon.;\nthen vs before)"], png,
                         title=title, col_labels=col_labels)

    result = {"run": str(run.root), "source": source, "settings": settings, "changes": changes,
              "latent_shift_norm": float(delta_t.norm()), "z_before": z.tolist(), "z_after": (z + delta_t).tolist(),
              "condition_names": run.condition_names if run.conditional else [],
              "condition_before": None if c_before is None else c_before[0].tolist(),
              "condition_after": None if c_after is None else c_after[0].tolist(),
              "image_change_mse": float(((after_img - before_img) ** 2).mean()),
              "reconstruction_mse": float(((before_img - x) ** 2).mean()),
              "strengths": [float(t) for t in strengths], "png": str(png), "json": str(json_path)}
    write_result(json_path, result)
    return result
