"""One run as the explorer page sees it: faces as codes, sliders, and decoding, through the model interface only.

A face is a reference the client can put in a URL (a test-split position, a prior seed and
temperature, an upload's id); the server turns it into codes once and keeps them. Every slider move
is then one ``decode`` of those codes with a few units replaced: no encoder, no autograd.

A hierarchical model decodes prior samples inside ``model.sampling(temperature)``, which re-estimates
its BatchNorm statistics on hundreds of samples (seconds on a CPU). The explorer enters that context
once per temperature step, under the lock every decode holds, and keeps a copy of the model made inside
it; leaving the context restores the model, so the one that decodes test faces and uploads is never seen
changed and a slider moved on a prior sample costs one decode.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from PIL import ExifTags, Image

from facevae.analysis.edit import dataset_crop
from facevae.analysis.shared import image_id, run_label
from facevae.analysis.traverse import dimension_labels
from facevae.common.errors import RunError
from facevae.data.align import FramedFace, frame_face
from facevae.serving.catalog import RunEntry
from facevae.serving.schemas import DecodeQuery, FromPrior, FromTest, FromUpload
from facevae.training.rundir import Run

MAX_SLIDERS = 64  # a 16x16 latent group has thousands of units; the page shows the ones with most KL
TEMPERATURE_STEP = 0.1  # BatchNorm statistics are re-estimated per step of temperature, not per value
SAMPLING_MODELS = 4
FACES_KEPT = 256
UPLOADS_KEPT = 32
QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that ImageOps.exif_transpose turns by 90°
READJUST_CONDITIONS = 512  # a conditional model's BatchNorm readjustment sees the training split's conditions


class QueryError(ValueError):
    """A request that names something this run does not have (answered 422 with the message)."""


class Missing(LookupError):
    """Something the server does not hold (answered 404): an upload never sent or dropped, a sample's original."""


class Lru(OrderedDict):
    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def keep(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)
        return value

    def fetch(self, key):
        self.move_to_end(key)
        return self[key]


class Uploads:
    """Uploaded photos in CelebA's frame, by content hash, the UPLOADS_KEPT latest: shared by every run."""

    def __init__(self, compute: threading.RLock, max_pixels: int):
        self._framed: Lru = Lru(UPLOADS_KEPT)
        self._lock = threading.Lock()
        self._compute, self.max_pixels = compute, max_pixels

    def add(self, data: bytes) -> tuple[str, FramedFace, tuple[int, int]]:
        """(id, the framed face, the picture's size); PictureError for bytes that are not a usable picture."""
        upload_id = hashlib.sha256(data).hexdigest()[:16]
        with self._lock:
            if upload_id in self._framed:
                return upload_id, *self._framed.fetch(upload_id)
        with self._compute:  # the detector runs on the cores the decoder uses
            framed = frame_face(data, self.max_pixels)
            with Image.open(io.BytesIO(data)) as img:  # the size as shown: a quarter turn by EXIF swaps the sides
                turned = img.getexif().get(ExifTags.Base.Orientation) in QUARTER_TURNS
                size = img.size[::-1] if turned else img.size
        with self._lock:
            self._framed.keep(upload_id, (framed, size))
        return upload_id, framed, size

    def get(self, upload_id: str) -> FramedFace:
        with self._lock:
            if upload_id not in self._framed:
                raise Missing(f"no upload {upload_id} on this server (uploads are kept in memory, the "
                                    f"{UPLOADS_KEPT} latest): upload the photo again")
            return self._framed.fetch(upload_id)[0]


@dataclass
class Face:
    codes: torch.Tensor  # (1, latent units), the flat view
    condition: torch.Tensor | None  # (1, conditions) in the model's order, or None for an unconditional model
    image: torch.Tensor | None  # (1, C, S, S) the original as the model sees it; None for a prior sample
    label: str
    attributes_known: bool
    temperature: float | None  # a prior sample's: it is decoded in the model's sampling mode


def as_uint8(images: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) in [0, 1] → (H, W, 3) uint8."""
    image = torch.nan_to_num(images[0].float(), 0.0).clamp(0, 1)
    return (image * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


class Explorer:
    def __init__(self, entry: RunEntry, run: Run, uploads: Uploads, compute: threading.RLock):
        """``compute``: one lock for every explorer of a server: its caches, and the cores (one decode at a time
        uses them all; two would only slow each other down)."""
        self.entry, self.run, self.uploads, self.compute = entry, run, uploads, compute
        self.model = run.model.eval()
        self.test_count = len(run.data.indices("test"))
        self._faces: Lru = Lru(FACES_KEPT)
        self._sliders: dict[str, dict] = {}
        self._sampling: Lru = Lru(SAMPLING_MODELS)
        self._typical: torch.Tensor | None = None

    # -- what the page shows ------------------------------------------------------------------------------
    def info(self) -> dict:
        groups = self.model.latent_groups
        return {"id": self.entry.id, "path": self.entry.relative, "label": run_label(self.run),
                "model": self.run.config.model.model, "image_size": self.run.config.model.image_size,
                "latent_units": self.model.latent_dim, "groups": [{"name": g.name, "size": g.size} for g in groups],
                "default_group": groups[0].name, "conditions": self.run.condition_names if self.run.conditional else [],
                "test_faces": self.test_count}

    def group(self, name: str | None):
        try:
            return self.run.group(name)
        except ValueError as exc:
            raise QueryError(f"group: {exc}") from None

    def sliders(self, name: str | None) -> dict:
        """The group's dimensions as `facevae dims` names them, active ones by KL (the MAX_SLIDERS first)."""
        group = self.group(name)
        with self.compute:
            if group.name not in self._sliders:
                self._sliders[group.name] = self._slider_table(group)
            return self._sliders[group.name]

    def _slider_table(self, group) -> dict:
        try:
            table, source = dimension_labels(self.run, group.name)  # without dims.json: encodes the test split
        except ValueError as exc:  # a damaged dims JSON: the run's state, not the request, is at fault
            raise RunError(str(exc)) from None
        active = [e for e in table if e["active"]]
        ranked = sorted(active or table, key=lambda e: (-e["kl"], e["dim"]))
        shown = ranked[:MAX_SLIDERS]
        note = f"{len(active)} active of {group.size}" if active else \
            f"no active dimension of {group.size}: showing the ones with most KL"
        if len(ranked) > len(shown):
            note += f", the {len(shown)} with most KL shown"
        if source is None:
            note += "; unnamed: run `facevae dims` on the run to name them"
        return {"group": group.name, "active": len(active), "size": group.size, "note": note,
                "names_from": source.name if source else None,
                "sliders": [{k: e[k] for k in ("dim", "label", "name", "score", "kl", "active")} for e in shown]}

    def summary(self, ref, group_name: str | None) -> dict:
        """The face's own values on the group's sliders and its own condition."""
        face, group = self.face(ref), self.group(group_name)
        dims = [s["dim"] for s in self.sliders(group.name)["sliders"]]
        return {"face": ref, "label": face.label, "group": group.name,
                "values": {d: round(float(face.codes[0, group.offset + d]), 4) for d in dims},
                "conditions": self.condition_values(face.condition), "attributes_known": face.attributes_known,
                "original": face.image is not None}

    def condition_values(self, condition: torch.Tensor | None) -> dict[str, float]:
        if condition is None:
            return {}
        return {n: round(float(v), 4) for n, v in zip(self.run.condition_names, condition[0])}

    # -- faces --------------------------------------------------------------------------------------------
    def face(self, ref) -> Face:
        key = ref.model_dump_json()
        with self.compute:
            if key in self._faces:
                return self._faces.fetch(key)
            if isinstance(ref, FromTest):
                face = self._test_face(ref.index)
            elif isinstance(ref, FromPrior):
                face = self._prior_face(ref.seed, ref.temperature)
            elif isinstance(ref, FromUpload):
                face = self._uploaded_face(ref.id)
            else:  # the schema allows no other; a new kind must be handled here
                raise QueryError(f"unknown face kind {type(ref).__name__}")
            return self._faces.keep(key, face)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.test_count:
            raise QueryError(f"face.index {index} out of range: the test split has {self.test_count} faces"
                             + (f" (0 to {self.test_count - 1})" if self.test_count else ""))

    def _encoded(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        with self.compute, torch.inference_mode():
            return self.model.encode(x, c).codes().clone()

    def _test_face(self, index: int) -> Face:
        self._check_index(index)
        x, y, rows = self.run.test_batch(1, index)
        c = self.run.condition_of(y)
        ident = image_id(self.run, int(rows[0]))
        label = f"test face {index} (row {int(rows[0])}" + (f", {ident})" if ident else ")")
        return Face(self._encoded(x, c), c, x, label, True, None)

    def _prior_face(self, seed: int, temperature: float) -> Face:
        generator = torch.Generator().manual_seed(seed)
        codes = self.model.prior_codes(1, temperature, generator).cpu()
        c = None
        if self.run.conditional:  # like `facevae sample`: the attributes of a test face, chosen by the seed
            if self.test_count:
                _, y, _ = self.run.test_batch(1, int(np.random.default_rng(seed).integers(self.test_count)))
                c = self.run.condition_of(y)
            else:
                c = self.typical_condition()
        return Face(codes, c, None, f"prior sample, seed {seed}, temperature {temperature:g}", self.run.conditional,
                    temperature)

    def _uploaded_face(self, upload_id: str) -> Face:
        framed = self.uploads.get(upload_id)
        meta = self.run.data.packed.meta
        aligned = framed.prepared(meta.height, dataset_crop(self.run))
        x = torch.from_numpy(np.array(aligned.image)).permute(2, 0, 1)[None]
        x, _ = self.run.data.prepare_batch((x, torch.zeros(1, 0)), train=False)
        c = self.typical_condition()
        found = "face found and aligned" if aligned.face_found else framed.why_not + ", centre crop"
        return Face(self._encoded(x, c), c, x, f"uploaded photo {upload_id[:8]} ({found})", False, None)

    def typical_condition(self) -> torch.Tensor | None:
        """A photo's attributes are unknown: the training split's most common value of each (as `facevae edit`)."""
        if not self.run.conditional:
            return None
        if self._typical is None:
            train = self.run.data.part_attributes("train")
            row = (train.mean(0) >= 0.5).astype(np.float32) if len(train) else \
                np.zeros(len(self.run.data.attribute_names), np.float32)
            self._typical = self.run.condition_of(torch.from_numpy(row)[None])
        return self._typical

    # -- decoding ---------------------------------------------------------------------------------------------
    def compose(self, query: DecodeQuery) -> tuple[torch.Tensor, torch.Tensor | None, float | None]:
        """The codes and condition the query describes, and the temperature to decode them at (None: posterior)."""
        face, group = self.face(query.face), self.group(query.group)
        bad = sorted(d for d in query.values if not 0 <= d < group.size)
        if bad:
            raise QueryError(f"values: dimension {', '.join(map(str, bad[:5]))} out of range: group {group.name} has "
                             f"{group.size} dimensions (0 to {group.size - 1})")
        codes = face.codes.clone()
        for dim, value in query.values.items():
            codes[0, group.offset + dim] = value
        condition = self._condition(face.condition, query.conditions)
        if query.morph is not None:
            other, t = self.face(query.morph.to), float(query.morph.t)
            codes = torch.lerp(codes, other.codes, t)
            if condition is not None:
                condition = torch.lerp(condition, other.condition, t)
        return codes, condition, face.temperature

    def _condition(self, own: torch.Tensor | None, settings: dict[str, float]) -> torch.Tensor | None:
        if not settings:
            return own
        names = self.run.condition_names if self.run.conditional else []
        unknown = sorted(set(settings) - set(names))
        if unknown:
            shown = ", ".join(repr(n[:40]) for n in unknown[:3])
            raise QueryError(f"conditions: {shown} not in this model's condition" +
                             (f" ({', '.join(names)})" if names else " (it takes none: an unconditional model)"))
        condition = own.clone()
        for name, value in settings.items():
            condition[0, names.index(name)] = float(value)
        return condition

    def render(self, query: DecodeQuery) -> np.ndarray:
        with self.compute, torch.inference_mode():
            codes, condition, temperature = self.compose(query)
            model = self.model if temperature is None else self._sampling_model(temperature)
            return as_uint8(model.decode(codes, condition).image())

    def _sampling_model(self, temperature: float):
        """The model in its sampling mode at the nearest TEMPERATURE_STEP (the caller holds the compute lock)."""
        step = max(1, round(temperature / TEMPERATURE_STEP))
        if step in self._sampling:
            return self._sampling.fetch(step)
        context = self.model.sampling(step * TEMPERATURE_STEP, self._readjust_conditions())
        if isinstance(context, contextlib.nullcontext):  # a flat model: prior samples decode like any codes
            return self.model
        # Copied inside the context, which then restores the run's model. A context held open with its copy
        # would be exited whenever the copy is dropped, outside inference mode, where restoring raises.
        with context:
            return self._sampling.keep(step, copy.deepcopy(self.model))

    def _readjust_conditions(self) -> torch.Tensor | None:
        if not self.run.conditional:
            return None
        train = self.run.data.part_attributes("train")[:READJUST_CONDITIONS]
        if not len(train):
            return self.typical_condition()
        return self.run.condition_of(torch.from_numpy(train.astype(np.float32)))

    def original(self, ref) -> np.ndarray:
        face = self.face(ref)
        if face.image is None:
            raise Missing("a prior sample has no original image")
        return as_uint8(face.image)
