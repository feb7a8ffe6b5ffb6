"""The disentanglement suite of a trained run, kept in its ``metrics.json`` under ``"disentanglement"``.

Data with generative factors (synthetic faces, procedural dSprites) is scored against them. By
default (``factors="uniform"``) every metric sees fresh observations, rendered by the dataset's own
renderer (:class:`~facevae.data.synthetic.SyntheticFaces`, :class:`~facevae.data.sprites.ProceduralDSprites`)
from independent uniform factors, as the metrics' definitions assume: the β-VAE and FactorVAE scores
by their pair and batch sampling (every pair of batches can share exactly one factor), MIG, DCI, SAP
and modularity/explicitness on sampled codes. With ``factors="data"`` the sampling metrics draw from
the prior the dataset was rendered with (the faces' CelebA-like prior is correlated) and the array
metrics score the codes of the run's test split against its factors: the first rows fit the
metrics' classifiers, the last ``n_eval`` rows score them.

Data without factors (CelebA) gets the array metrics against its binary attributes as weak labels
(:func:`facevae.metrics.weak_label_metrics`). Codes are posterior means. The sizes default to the
standard ones (10,000 training and 5,000 evaluation points); smaller ``n`` is for quick looks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from facevae.metrics.suite import ARRAY_METRICS, SAMPLING_METRICS

METRIC_NAMES = SAMPLING_METRICS + ARRAY_METRICS


def parse_metric_names(metrics) -> list[str]:
    """``"all"``, ``"mig,dci"`` or a list of names → the names, checked, without repeats."""
    if isinstance(metrics, str):
        metrics = METRIC_NAMES if metrics.strip() == "all" else metrics.split(",")
    names = list(dict.fromkeys(m.strip().replace("-", "_") for m in metrics if m.strip()))
    unknown = [m for m in names if m not in METRIC_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown metric {(unknown or [''])[0]!r}; choose from all, {', '.join(METRIC_NAMES)}")
    return names


FACTOR_SOURCES = ("uniform", "data")
# Ten times disentanglement_lib's 10,000: already hours of rendering on a laptop; a billion fills the memory.
MAX_POINTS = 100_000


def check_point_counts(**counts: int) -> None:
    """One line naming the flag (``n_eval=...`` → --n-eval) of a count of points that is not 1 to MAX_POINTS."""
    for name, value in counts.items():
        if not 1 <= value <= MAX_POINTS:
            raise ValueError(f"--{name.replace('_', '-')} must be 1 to {MAX_POINTS:,} points, got {value:,}")


def compute_disentanglement(run_dir: str | os.PathLike, metrics="all", n: int = 10000, n_eval: int = 5000,
                            seed: int = 0, batch_size: int = 64, write: bool = True, group: str | None = None,
                            factors: str = "uniform") -> dict:
    """The suite for the run at ``run_dir``; with ``write``, also stored in its metrics.json.

    Returns ``{"scores": {name: float in [0, 1], or None where undefined}, "labels": "factors" or
    "attributes", "settings": {...}}`` and, for weak labels, ``"attributes"``: the per-attribute rows
    of ``weak_label_metrics``. The codes are the posterior means of the latent ``group`` (default:
    the model's top group, the only one of a flat model); the settings say which.

    ``factors``: "uniform" (default) scores every metric on fresh observations rendered from
    independent, uniform factors, as the metrics' definitions assume and disentanglement_lib does;
    "data" draws the sampling metrics' factors from the prior the dataset was rendered with (the
    synthetic faces' CelebA-like prior is correlated) and scores the array metrics on the test split.
    Data whose factors no built-in renderer made always uses its test split for the array metrics.
    """
    from facevae.common.files import check_writable
    from facevae.common.settings import check_seed
    from facevae.training.callbacks import read_metrics
    from facevae.training.rundir import READ_ONLY_FIX, open_run

    if factors not in FACTOR_SOURCES:
        raise ValueError(f"factors must be one of {', '.join(FACTOR_SOURCES)}, got {factors!r}")
    check_seed(seed)
    check_point_counts(n=n, n_eval=n_eval)
    run = open_run(run_dir)
    if write:  # the result goes into metrics.json: find out now, not after minutes of work, that it cannot
        if (run.root / "metrics.json").is_file():
            read_metrics(run.root / "metrics.json")
        check_writable(run.root / "metrics.json", fix=READ_ONLY_FIX)
    group = run.group(group).name
    asked_all = isinstance(metrics, str) and metrics.strip() == "all"
    names = _applicable(parse_metric_names(metrics), run.data.has_factors, asked_all)
    result = {"labels": "factors" if run.data.has_factors else "attributes", "scores": {},
              "settings": {"metrics": names, "n": int(n), "n_eval": int(n_eval), "seed": int(seed),
                           "batch_size": int(batch_size), "codes": "posterior mean", "group": group}}
    renderer = _renderer(run, factors) if run.data.has_factors else None
    sampled = [m for m in names if m in SAMPLING_METRICS or (renderer is not None and factors == "uniform")]
    if renderer is not None:
        result["settings"]["factors"] = _factors_text(renderer, factors)
    if sampled:
        scores = _sampling_scores(run, renderer, sampled, n, n_eval, seed, batch_size, group)
        if "factor_vae_active_dims" in scores:  # a count, not a score
            result["settings"]["factor_vae_active_dims"] = int(scores.pop("factor_vae_active_dims"))
        result["scores"] |= scores
    array = [m for m in names if m in ARRAY_METRICS and m not in sampled]
    if array:
        scores, attributes = _array_scores(run, array, n, n_eval, group)
        result["scores"] |= scores
        if attributes is not None:
            result["attributes"] = attributes
    # A metric that is undefined on too few codes (a class missing from the evaluation rows) is null, not NaN.
    result["scores"] = {k: (float(v) if np.isfinite(v) else None) for k, v in result["scores"].items()}
    if write:
        _store(Path(run_dir) / "metrics.json", result)
    return result


def _applicable(names: list[str], has_factors: bool, asked_all: bool) -> list[str]:
    if has_factors:
        return names
    sampling = [m for m in names if m in SAMPLING_METRICS]
    if sampling and not asked_all:
        raise ValueError(f"{sampling[0]} needs ground-truth factors; this run's data has only attributes "
                         f"(use {', '.join(ARRAY_METRICS)})")
    return [m for m in names if m not in SAMPLING_METRICS]


def _store(path: Path, result: dict) -> None:
    from facevae.common.files import write_json_atomic
    from facevae.training.callbacks import read_metrics

    data = read_metrics(path) if path.is_file() else {}
    data["disentanglement"] = result
    write_json_atomic(path, data)


# --- sampling metrics ----------------------------------------------------------------------------------
ENCODER_CHUNK = 256  # images per forward pass


class _LabelledFaces:
    """Synthetic faces whose observations are what a run's encoder takes: ``(images, attributes)``, the
    images prepared as in training (float, resized), the attributes the ones a conditional run is given.

    The renderers draw nothing, so ``encode_batches`` renders and encodes in DataLoader worker processes
    (forked: they share the model), one encoder chunk at a time: the same tensors reach the model as
    when the main process does it all, so the codes are the same (docs/benchmarks.md, "The disentanglement
    suite of a run").
    """

    def __init__(self, faces, attribute_columns: list[int] | None, image_size: int | None, workers: int = 0,
                 attributes_of=None):
        self.faces, self.columns, self.image_size, self.workers = faces, attribute_columns, image_size, workers
        self.attributes_of = attributes_of or faces.attributes
        self.factor_sizes = faces.factor_sizes

    def sample_factors(self, n, random_state):
        return self.faces.sample_factors(n, random_state)

    def render(self, factors):
        from facevae.data.datamodule import prepare_images

        images = torch.from_numpy(self.faces.render(factors)).permute(0, 3, 1, 2)
        attributes = None if self.columns is None else self.attributes_of(factors)[:, self.columns]
        return (prepare_images(images, self.image_size),
                None if attributes is None else torch.from_numpy(attributes).float())

    def encode_batches(self, factors, encode, batch_size: int):
        batches = [(lo, min(lo + batch_size, len(factors))) for lo in range(0, len(factors), batch_size)]
        chunks = [[(a, min(a + ENCODER_CHUNK, hi)) for a in range(lo, hi, ENCODER_CHUNK)] for lo, hi in batches]
        # A worker has as many chunks in hand as a batch holds, so that none waits for the main process.
        ahead = ({"prefetch_factor": -(-len(chunks[0]) // self.workers) + 1, "multiprocessing_context": "fork"}
                 if self.workers else {})
        loader = torch.utils.data.DataLoader(_EncodedChunks(self, encode, factors, [c for batch in chunks for c in batch]), batch_size=None,
                                             num_workers=self.workers, **ahead)
        encoded = iter(loader)
        for batch in chunks:
            yield np.concatenate([next(encoded) for _ in batch])


class _EncodedChunks(torch.utils.data.Dataset):
    def __init__(self, faces: _LabelledFaces, encode, factors, chunks):
        self.faces, self.encode, self.factors, self.chunks = faces, encode, factors, chunks

    def __len__(self):
        return len(self.chunks)

    def __getitem__(self, i):
        lo, hi = self.chunks[i]
        return self.encode(self.faces.render(self.factors[lo:hi]))


def renderer_of(packed, prior: str | None = None):
    """The renderer that made a packed built-in dataset (synthetic faces, procedural dSprites), drawing factors
    from ``prior`` ("uniform": independent; None: the prior the dataset was rendered with)."""
    from facevae.data.sprites import DSPRITES_SOURCE, ProceduralDSprites
    from facevae.data.synthetic import SyntheticFaces

    meta = packed.meta
    if meta.source == DSPRITES_SOURCE:
        renderer = ProceduralDSprites(channels=3)  # dSprites' factors are independent whatever is asked
    else:
        # write_synthetic_packed records the prior only in its preprocessing note.
        match = re.search(r"prior=(\w+)", meta.preprocessing)
        renderer = SyntheticFaces(size=(meta.height, meta.width), prior=prior or (match.group(1) if match else "celeba"))
    if list(packed.factor_names) != renderer.factor_names:
        raise ValueError(f"{packed.root}: its factors are not the built-in renderers' ({', '.join(packed.factor_names)}); "
                         "the sampling metrics need a renderer for them")
    return renderer


def _renderer(run, factors: str):
    try:
        return renderer_of(run.data.packed, "uniform" if factors == "uniform" else None)
    except ValueError:
        return None  # factors no built-in renderer made: the test split is all there is


def _factors_text(renderer, factors: str) -> str:
    if factors == "uniform":
        return "independent uniform factors, rendered fresh"
    prior = getattr(renderer, "prior", "uniform")
    return f"the data's prior ({prior}) for the sampling metrics, the test split for the array metrics"


def _sampling_scores(run, faces, names, n, n_eval, seed, batch_size, group) -> dict:
    from facevae.metrics.suite import ground_truth_metrics

    if faces is None:
        raise ValueError(f"{run.root}: its factors are not the built-in renderers'; the sampling metrics need one")
    columns, attributes_of = _condition_columns(run, faces) if run.conditional else (None, None)
    # As many workers as this process has threads (a sweep worker sharing the machine has fewer). Forked,
    # they share a model on the CPU; started any other way they would need it pickled, and CUDA cannot fork.
    forks = "fork" in torch.multiprocessing.get_all_start_methods()
    on_cpu = all(p.device.type == "cpu" for p in run.model.parameters())
    workers = torch.get_num_threads() if torch.get_num_threads() > 1 and forks and on_cpu else 0
    observations = _LabelledFaces(faces, columns, run.data.image_size, workers, attributes_of)
    return ground_truth_metrics(observations, _encoder(run, group), seed, metrics=names,
                                num_train=n, num_test=n_eval, sampling_batch_size=batch_size)


def _condition_columns(run, faces) -> tuple[list[int], object]:
    """Where a conditional run's attributes are among those the renderer gives, and the function that gives them.
    `data fake-celeba` data has all 40 of CelebA's, not only the ones the factors express (seeded by the factors,
    so the same as in its files)."""
    from facevae.data.attributes import CELEBA_ATTRIBUTES

    wanted = run.data.attribute_names
    if set(wanted) <= set(faces.attribute_names):
        return [faces.attribute_names.index(a) for a in wanted], faces.attributes
    if hasattr(faces, "all_celeba_attributes") and set(wanted) <= set(CELEBA_ATTRIBUTES):
        return [CELEBA_ATTRIBUTES.index(a) for a in wanted], faces.all_celeba_attributes
    missing = [a for a in wanted if a not in faces.attribute_names]
    raise ValueError(f"{run.root}: the renderer of its factors gives no {', '.join(missing)}, which this conditional "
                     "model needs; score its test split instead: --metrics mig,dci,sap,modularity --factors data")


def _encoder(run, group: str, chunk: int = ENCODER_CHUNK):
    @torch.no_grad()
    def encode(observations) -> np.ndarray:
        images, attributes = observations
        codes = []
        for lo in range(0, len(images), chunk):
            y = None if attributes is None else attributes[lo:lo + chunk]
            latents = run.model.encode(images[lo:lo + chunk], run.condition_of(y) if y is not None else None,
                                       through=group)
            codes.append(latents.codes(group))
        return torch.cat(codes).numpy()

    return encode


# --- array metrics on the test split -------------------------------------------------------------------
def fit_and_eval_rows(num_rows: int, n: int, n_eval: int) -> tuple[slice, slice]:
    """The last ``n_eval`` rows (at most half) score; up to ``n`` rows before them fit."""
    if num_rows < 4:
        raise ValueError(f"the test split has {num_rows} images; the array metrics need at least 4")
    num_eval = max(2, min(n_eval, num_rows // 2))
    num_fit = max(2, min(n, num_rows - num_eval))
    return slice(num_rows - num_eval - num_fit, num_rows - num_eval), slice(num_rows - num_eval, num_rows)


def _array_scores(run, names, n, n_eval, group) -> tuple[dict, list | None]:
    """Scores, and the per-attribute rows when the labels are attributes."""
    from facevae.metrics.suite import array_metrics
    from facevae.metrics.weak_labels import weak_label_metrics

    test = run.encode("test", through=group)
    codes = test.codes(group)
    fit, score = fit_and_eval_rows(len(codes), n, n_eval)
    if run.data.has_factors:
        labels = test.factors
        return array_metrics(codes[fit], labels[fit], codes[score], labels[score], metrics=names), None
    labels = test.attributes
    weak = weak_label_metrics(codes[fit], labels[fit], codes[score], labels[score], run.data.attribute_names,
                              metrics=names)
    return weak, weak.pop("attributes")


def format_disentanglement(result: dict) -> str:
    """The scores as a two-column text table."""
    against = "ground-truth factors" if result["labels"] == "factors" else "attributes as weak labels"
    group = result.get("settings", {}).get("group")
    if group:
        against += f" (posterior means of latent group {group})"
    if result.get("settings", {}).get("factors"):
        against += f"; factors: {result['settings']['factors']}"
    width = max(len(k) for k in result["scores"]) if result["scores"] else 6
    rows = [f"{'metric':<{width}}  score", f"{'-' * width}  -----"]
    for name, value in result["scores"].items():
        rows.append(f"{name:<{width}}  {'—' if value is None else f'{value:.3f}'}")
    return f"disentanglement against {against}\n" + "\n".join(rows)
