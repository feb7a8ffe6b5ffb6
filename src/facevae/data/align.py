"""A photo framed like CelebA's aligned faces, then prepared exactly as the dataset was.

CelebA's ``img_align_celeba`` pictures are 178×218 with the five landmarks (eyes, nose, mouth
corners) near fixed places; :func:`facevae.data.prepare.decode_face` then takes the centre 148 and
resizes it. A model trained on that has only ever seen faces framed that way, so a user's photo is
brought into the same frame first:

1. read with Pillow's decompression-bomb guard (and a pixel cap of our own), EXIF orientation applied;
2. find the face and its five landmarks with MTCNN (Zhang et al. 2016) from the ``facenet-pytorch``
   package, whose weights (pnet/rnet/onet.pt) ship inside its wheel: nothing is downloaded;
3. the similarity transform (rotation, uniform scale, shift; Umeyama 1991) that takes the five points
   closest, in least squares, to CELEBA_TEMPLATE warps the photo into a 178×218 frame;
4. that frame is cropped and resized with the dataset's crop and size, exactly as ``decode_face`` does a
   CelebA file.

Where no face is found (or the detector is not installed), the photo is centre-cropped instead:
scaled down to cover the 178×218 frame when it is bigger than that, then the same crop. A picture no
bigger than the frame is therefore prepared exactly as ``decode_face`` prepares it.

CELEBA_TEMPLATE: the mean landmark positions of ``list_landmarks_align_celeba.txt`` (CelebA's
landmark file for the aligned images), rounded to pixels, as recorded in the comment at the top of
ALAE's ``align_faces.py`` (podgorskiy/ALAE): 69 111 108 111 88 136 72 152 105 152. The first rows of
that file as published (000001.jpg: 69 109 106 113 77 142 73 152 108 154) agree to a few pixels.
"""

from __future__ import annotations

import io
import math
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from facevae.data.prepare import CELEBA_CROP, to_rgb

CELEBA_FRAME = (178, 218)  # width, height of img_align_celeba
# lefteye, righteye, nose, leftmouth, rightmouth ("left": the left of the picture, the person's right)
CELEBA_TEMPLATE = np.array([[69, 111], [108, 111], [88, 136], [72, 152], [105, 152]], np.float64)
DETECT_MAX_SIDE = 640  # MTCNN's pyramid on a bigger photo costs seconds and finds nothing more
DECODE_MIN_SIDE = 1600  # JPEGs are decoded at a reduced scale that keeps at least this much
MIN_FACE_PROBABILITY = 0.9
MIN_DETECT_SIDE = 24  # MTCNN looks for faces of 20 px and up; on a smaller picture its pyramid is empty and it raises
MAX_MINIFICATION = 1.5  # source pixels per frame pixel the bicubic warp may skip; beyond, box-filter first
DEFAULT_MAX_PIXELS = 40_000_000


class PictureError(ValueError):
    """The bytes are not a picture that can be used (not an image, truncated, too large)."""


@dataclass
class Detection:
    box: np.ndarray  # (4,) x0, y0, x1, y1 in the photo's pixels
    landmarks: np.ndarray  # (5, 2) in CELEBA_TEMPLATE's order
    probability: float


@dataclass
class AlignedFace:
    image: np.ndarray  # (size, size, 3) uint8, as the packed dataset stores faces
    detection: Detection | None
    note: str  # how the face was framed, in words

    @property
    def face_found(self) -> bool:
        return self.detection is not None

    def describe(self) -> dict:
        """What a result JSON records about the framing."""
        info = {"face_found": self.face_found, "alignment": self.note}
        if self.detection is not None:
            info.update(face_box=[round(float(v), 1) for v in self.detection.box],
                        landmarks=[[round(float(v), 1) for v in p] for p in self.detection.landmarks],
                        face_probability=round(self.detection.probability, 4))
        return info


# --- reading --------------------------------------------------------------------------------------------
def read_picture(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The picture in ``data`` as RGB, upright by its EXIF orientation; PictureError for anything else."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a warning would let it through
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if max_pixels is not None and width * height > max_pixels:
                raise PictureError(f"the picture is {width}×{height}, more than the {max_pixels:,} pixels allowed")
            if img.format == "JPEG":  # decode at a reduced scale: a 40 MP photo otherwise takes a second
                img.draft("RGB", (min(width, DECODE_MIN_SIDE), min(height, DECODE_MIN_SIDE)))
            img.load()
            return to_rgb(ImageOps.exif_transpose(img))  # 16-bit tones and transparency as the dataset's
    except PictureError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PictureError("the picture has too many pixels (Pillow's decompression-bomb guard)") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for bytes that are not a whole image
        raise PictureError(f"not an image that can be read ({type(exc).__name__})") from None


# --- detection -------------------------------------------------------------------------------------------
_detector_lock = threading.Lock()
_detector: list = []  # [the MTCNN] once loaded, [None] when facenet-pytorch is not installed


def detector():
    """facenet-pytorch's MTCNN on the CPU, loaded once; None when the package is not installed."""
    with _detector_lock:
        if not _detector:
            try:
                from facenet_pytorch import MTCNN
            except ImportError:
                _detector.append(None)
            else:
                _detector.append(MTCNN(keep_all=True, device="cpu"))
        return _detector[0]


def detect_face(picture: Image.Image) -> Detection | None:
    """The largest face MTCNN is sure of (probability ≥ MIN_FACE_PROBABILITY), or None."""
    mtcnn = detector()
    if mtcnn is None or min(picture.size) < MIN_DETECT_SIDE:
        return None
    shrink = max(1.0, max(picture.size) / DETECT_MAX_SIDE)
    small = picture if shrink == 1 else picture.resize(
        (max(1, round(picture.width / shrink)), max(1, round(picture.height / shrink))), Image.Resampling.BILINEAR)
    import torch

    try:
        with torch.inference_mode():
            boxes, probabilities, landmarks = mtcnn.detect(small, landmarks=True)
    except (ValueError, RuntimeError, IndexError):  # shapes its pyramid cannot take: for us, no face found
        return None
    if boxes is None:
        return None
    candidates = [(float((b[2] - b[0]) * (b[3] - b[1])), i) for i, (b, p) in enumerate(zip(boxes, probabilities))
                  if p is not None and float(p) >= MIN_FACE_PROBABILITY]
    if not candidates:
        return None
    best = max(candidates)[1]
    return Detection(np.asarray(boxes[best], np.float64) * shrink,
                     np.asarray(landmarks[best], np.float64).reshape(5, 2) * shrink, float(probabilities[best]))


# --- the frame --------------------------------------------------------------------------------------------
def similarity_transform(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(scale s, rotation R, shift t) minimising Σ|s·R·p + t − q|² over point pairs (Umeyama 1991, no mirror)."""
    mu_p, mu_q = source.mean(0), target.mean(0)
    p, q = source - mu_p, target - mu_q
    u, singular, vt = np.linalg.svd(q.T @ p / len(p))
    flip = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ flip @ vt
    scale = float(np.trace(np.diag(singular) @ flip) / max((p**2).sum(1).mean(), 1e-12))
    return scale, rotation, mu_q - scale * rotation @ mu_p


def warp_to_frame(picture: Image.Image, landmarks: np.ndarray) -> Image.Image:
    """The 178×218 frame in which ``landmarks`` land nearest CelebA's template."""
    scale, _, _ = similarity_transform(landmarks, CELEBA_TEMPLATE)
    reduce = max(1, math.floor(1 / (scale * MAX_MINIFICATION)))  # bicubic alone would alias a big photo
    if reduce > 1:
        picture, landmarks = picture.reduce(reduce), landmarks / reduce
    scale, rotation, shift = similarity_transform(landmarks, CELEBA_TEMPLATE)
    inverse = rotation.T / scale  # Pillow asks, for each frame pixel, where it comes from in the photo
    offset = -inverse @ shift
    coefficients = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    fill = tuple(int(v) for v in np.asarray(picture.resize((1, 1), Image.Resampling.BOX)).reshape(3))
    return picture.transform(CELEBA_FRAME, Image.Transform.AFFINE, coefficients, Image.Resampling.BICUBIC,
                             fillcolor=fill)


def centre_frame(picture: Image.Image) -> Image.Image:
    """A picture bigger than the frame, scaled to cover it and centre-cropped to it; a smaller one as it is."""
    width, height = CELEBA_FRAME
    if picture.width <= width or picture.height <= height:
        return picture
    cover = max(width / picture.width, height / picture.height)
    box_w, box_h = width / cover, height / cover
    left, top = (picture.width - box_w) / 2, (picture.height - box_h) / 2
    return picture.resize(CELEBA_FRAME, Image.Resampling.BILINEAR, box=(left, top, left + box_w, top + box_h),
                          reducing_gap=2.0)


def prepared(frame: Image.Image, size: int, crop: int) -> np.ndarray:
    """The frame cropped and resized as :func:`~facevae.data.prepare.decode_face` does a decoded file (the same
    box: torchvision's CenterCrop of ``min(crop, width, height)``; the same antialiased bilinear resize)."""
    side = min(crop, frame.width, frame.height)
    left, top = round((frame.width - side) / 2), round((frame.height - side) / 2)
    return np.asarray(frame.convert("RGB").resize((size, size), Image.Resampling.BILINEAR,
                                                  box=(left, top, left + side, top + side)))


@dataclass
class FramedFace:
    """A picture in CelebA's frame, before the dataset's crop: what a server keeps of an upload."""

    frame: Image.Image  # 178×218 when aligned; the centre frame (or the picture) otherwise
    detection: Detection | None
    why_not: str  # why it is not aligned ("" when it is)

    def prepared(self, size: int, crop: int = CELEBA_CROP) -> AlignedFace:
        """The face as the dataset would hold it at ``size`` with the dataset's ``crop``."""
        if self.detection is not None:
            note = (f"five-point alignment to CelebA's template (MTCNN, face probability "
                    f"{self.detection.probability:.3f}), then the centre {crop} resized to {size}")
        else:
            note = f"{self.why_not}: centre crop {crop} resized to {size}, as the dataset's preparation"
        return AlignedFace(prepared(self.frame, size, crop), self.detection, note)


def frame_face(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS, align: bool = True) -> FramedFace:
    """The picture ``data`` in CelebA's frame: aligned where a face is found, centre-cropped where not.
    PictureError when ``data`` is not a usable picture."""
    picture = read_picture(data, max_pixels)
    detection = detect_face(picture) if align else None
    if detection is not None:
        return FramedFace(warp_to_frame(picture, detection.landmarks), detection, "")
    why = ("alignment off" if not align else "no face detector installed (pip install 'facevae[serve]')"
           if detector() is None else "no face found")
    return FramedFace(centre_frame(picture), None, why)


def align_face(data: bytes, size: int, crop: int = CELEBA_CROP, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               align: bool = True) -> AlignedFace:
    """The face in the picture ``data`` as the dataset would hold it: (size, size, 3) uint8, and how it was
    framed. PictureError when ``data`` is not a usable picture."""
    return frame_face(data, max_pixels, align).prepared(size, crop)
