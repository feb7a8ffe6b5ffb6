"""Attribute classifiers: torchvision backbones (transfer learning) and a small CNN for 64×64 faces.

:class:`AttributeClassifier` wraps one backbone with a multi-label head (one logit per attribute)
and does its own input preparation, so every caller feeds it float images in [0, 1] at whatever
size the dataset stores:

* **resize** to the backbone's input size on the fly (``F.interpolate``; InceptionV3 takes 299×299,
  ResNets 224×224 by default, the small CNN the stored size), antialiased when shrinking;
* **normalise**: ImageNet mean/std when a torchvision backbone starts from pretrained weights (and, for
  InceptionV3, torchvision's ``transform_input``, which turns that into the normalisation the
  original Google weights expect); (x - 0.5) / 0.5 otherwise.

Weights: ``"imagenet"`` goes through torchvision's weights API and torch.hub's cache
(``$TORCH_HOME/hub/checkpoints``), downloading the file once when the network allows and failing
at once with a message that suggests ``--weights PATH`` when it does not; ``PATH`` is a local
state dict (``.pth``/``.pt``, a Lightning ``.ckpt`` or ``.safetensors``), either torchvision's own
(1000-class head, ignored) or an exported classifier's. Shapes are checked tensor by tensor and a
mismatch is one clear error.

Two-stage transfer learning: :meth:`AttributeClassifier.set_backbone_frozen` freezes everything
but the head(s) (and keeps the frozen batch-norm layers in inference mode), for the head-only
stage; unfreezing starts fine-tuning.
"""

from __future__ import annotations

import difflib
import os
import socket
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.hub import load_state_dict_from_url  # module-level so tests can make the download fail

BACKBONES = ("small", "resnet18", "resnet50", "inception_v3")
DEFAULT_INPUT_SIZE = {"resnet18": 224, "resnet50": 224, "inception_v3": 299}  # small: the stored size
INCEPTION_MIN_SIZE = 299  # the auxiliary head needs a 17×17 Mixed_6e map
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DOWNLOAD_TIMEOUT_S = 10.0


class WeightsError(ValueError):
    """Weights that cannot be had or do not fit the backbone; the message says what to do."""


def check_backbone(name: str) -> str:
    if name not in BACKBONES:
        close = difflib.get_close_matches(str(name), BACKBONES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"unknown backbone {name!r}{hint}; available: {', '.join(BACKBONES)}")
    return name


def default_input_size(backbone: str, stored_size: int) -> int:
    return DEFAULT_INPUT_SIZE.get(check_backbone(backbone), stored_size)


MAX_INPUT_SIZE = 1024


def check_input_size(backbone: str, size: int) -> int:
    if size < 16:
        raise ValueError(f"--image-size {size} is too small for a classifier (at least 16 pixels)")
    if size > MAX_INPUT_SIZE:  # a batch of them would not fit in memory: an allocation error, naming no flag
        raise ValueError(f"--image-size {size}: at most {MAX_INPUT_SIZE} (the backbones are made for 224 to 299 "
                         "pixels; CelebA's aligned faces are 218×178)")
    if backbone == "inception_v3" and size < INCEPTION_MIN_SIZE:
        raise ValueError(f"inception_v3 needs --image-size {INCEPTION_MIN_SIZE} or more (its auxiliary head "
                         f"needs a 17×17 feature map), got {size}")
    return size


# --- the small CNN ---------------------------------------------------------------------------------

def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """A compact VGG-style CNN for 64×64 faces: 7 conv-BN-ReLU layers (4 of stride 2), a 4×4 map.

    The final map is pooled to 4×4 (not 1×1) and flattened, so the head still knows *where* a
    feature is (bangs above the eyes, a beard below the mouth). About 40 M multiply-adds per 64×64
    image at ``width=32``: quick on a laptop CPU.
    """

    def __init__(self, num_classes: int = 1000, width: int = 32, dropout: float = 0.2):
        super().__init__()
        c = [width, width * 2, width * 4, width * 8]
        self.features = nn.Sequential(
            _conv_bn(3, c[0], 2), _conv_bn(c[0], c[0]),
            _conv_bn(c[0], c[1], 2), _conv_bn(c[1], c[1]),
            _conv_bn(c[1], c[2], 2), _conv_bn(c[2], c[2]),
            _conv_bn(c[2], c[3], 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c[3] * 16, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))


# --- torchvision backbones -------------------------------------------------------------------------

def _torchvision_net(backbone: str, pretrained: bool, init: bool) -> nn.Module:
    import torchvision.models as tvm

    if backbone == "resnet18":
        return tvm.resnet18(weights=None)
    if backbone == "resnet50":
        return tvm.resnet50(weights=None)
    if backbone == "inception_v3":
        # transform_input: ImageNet-normalised input → the (x - 0.5) / 0.5 the Google weights expect,
        # exactly what torchvision sets up for its pretrained InceptionV3.
        return tvm.inception_v3(weights=None, aux_logits=True, transform_input=pretrained, init_weights=init)
    raise ValueError(f"not a torchvision backbone: {backbone!r}")


def imagenet_weights(backbone: str):
    """torchvision's weights enum entry for the backbone's ImageNet weights."""
    import torchvision.models as tvm

    table = {"resnet18": tvm.ResNet18_Weights.IMAGENET1K_V1, "resnet50": tvm.ResNet50_Weights.IMAGENET1K_V2,
             "inception_v3": tvm.Inception_V3_Weights.IMAGENET1K_V1}
    check_backbone(backbone)
    if backbone not in table:
        raise WeightsError(f"there are no ImageNet weights for the {backbone!r} backbone; use --weights none "
                           "(train from scratch) or --weights PATH (a state dict of your own)")
    return table[backbone]


class AttributeClassifier(nn.Module):
    """A backbone with one logit per attribute; input float (B, 3, H, W) in [0, 1], any H = W.

    ``forward(x)`` returns logits (B, A); ``forward(x, with_aux=True)`` returns ``(logits, aux)``
    where ``aux`` is InceptionV3's auxiliary head in training mode and ``None`` otherwise.
    """

    def __init__(self, backbone: str, num_attributes: int, *, input_size: int, pretrained: bool = False,
                 width: int = 32, init: bool = True):
        super().__init__()
        self.backbone = check_backbone(backbone)
        self.num_attributes = int(num_attributes)
        self.input_size = check_input_size(backbone, int(input_size))
        # No ImageNet weights exist for the small CNN: a PATH for it is one of our own runs, trained on (x - 0.5) / 0.5.
        self.pretrained = bool(pretrained) and backbone != "small"
        self.width = int(width)
        if num_attributes < 1:
            raise ValueError("a classifier needs at least one attribute")
        if backbone == "small":
            self.net = SmallCNN(num_attributes, width=width)
        else:
            self.net = _torchvision_net(backbone, self.pretrained, init)
            self.net.fc = nn.Linear(self.net.fc.in_features, num_attributes)
            if backbone == "inception_v3":
                self.net.AuxLogits.fc = nn.Linear(self.net.AuxLogits.fc.in_features, num_attributes)
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if self.pretrained else ((0.5,) * 3, (0.5,) * 3)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.backbone_frozen = False

    # --- parts ------------------------------------------------------------------------------------
    def head_prefixes(self) -> tuple[str, ...]:
        return ("fc.", "AuxLogits.fc.") if self.backbone == "inception_v3" else ("fc.",)

    def is_head(self, name: str) -> bool:
        """Whether a parameter name (of ``self.net``) belongs to the new attribute head(s)."""
        return name.startswith(self.head_prefixes())

    def head_parameters(self):
        return [p for n, p in self.net.named_parameters() if self.is_head(n)]

    def backbone_parameters(self):
        return [p for n, p in self.net.named_parameters() if not self.is_head(n)]

    def set_backbone_frozen(self, frozen: bool) -> None:
        """Stage 1 (frozen: only the head learns, batch norm in inference mode) or stage 2 (fine-tuning)."""
        self.backbone_frozen = bool(frozen)
        for p in self.backbone_parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.backbone_frozen:
            for name, module in self.net.named_modules():
                if name and not self.is_head(name + ".") and isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    # --- forward ----------------------------------------------------------------------------------
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div(255.0)
        size = self.input_size
        if tuple(x.shape[-2:]) != (size, size):
            shrink = x.shape[-1] > size or x.shape[-2] > size
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor, with_aux: bool = False):
        out = self.net(self.preprocess(x))
        if isinstance(out, tuple):  # torchvision's InceptionOutputs in training mode
            logits, aux = out[0], out[1]
        else:
            logits, aux = out, None
        return (logits, aux) if with_aux else logits

    # --- weights ------------------------------------------------------------------------------------
    def load_backbone_weights(self, source: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> dict:
        """Load ``"imagenet"`` or a local state dict ``PATH`` into the network; returns what was loaded.

        The new attribute head(s) keep their fresh initialisation unless the file holds heads of
        exactly the same shape (a classifier of the same attributes). Every other tensor must be
        there with the network's shape; anything else is a :class:`WeightsError`.
        """
        if source == "imagenet":
            state, origin = download_imagenet_state_dict(self.backbone, timeout=timeout), "imagenet"
        else:
            state, origin = read_state_dict(source), str(source)
        return load_into(self, state, origin)


def download_imagenet_state_dict(backbone: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> dict:
    """torchvision's ImageNet weights, from torch.hub's cache or downloaded into it; fails fast offline."""
    weights = imagenet_weights(backbone)
    url = weights.url
    filename = url.rsplit("/", 1)[-1]
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # torch.hub's urlopen has no timeout of its own: never hang
    try:
        return load_state_dict_from_url(url, model_dir=str(cache), map_location="cpu", progress=False,
                                        check_hash=True, weights_only=True)
    except OSError as exc:  # URLError, HTTPError, socket timeouts, DNS failures, a full disk
        reason = getattr(exc, "reason", None) or exc
        raise WeightsError(
            f"cannot download the ImageNet weights of {backbone} ({url}: {reason}). Without network, fetch "
            f"that file elsewhere and pass it with --weights PATH (e.g. --weights ~/{filename}), or put it in "
            f"{cache}/ where torchvision looks first; --weights none trains from scratch"
        ) from None
    except RuntimeError as exc:  # a damaged cached file or a hash mismatch
        raise WeightsError(f"the ImageNet weights of {backbone} in {cache / filename} cannot be read "
                           f"({str(exc).splitlines()[0]}); delete the file and try again") from None
    finally:
        socket.setdefaulttimeout(old_timeout)


def read_state_dict(path: str | os.PathLike) -> dict:
    """A state dict from a local file: torch (read with weights_only), Lightning checkpoint or safetensors."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (--weights takes imagenet, none or a file PATH)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    from facevae.training.checkpoints import safe_load

    try:
        obj = safe_load(path)
    except ValueError as exc:
        raise WeightsError(str(exc)) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # a Lightning checkpoint
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    return obj


_PREFIXES = ("", "module.", "model.", "net.", "model.net.", "module.net.", "backbone.", "model.model.net.")


def _strip_prefix(state: dict, target_keys: set[str]) -> dict:
    """The file's keys with the wrapper prefix (``module.``, ``model.net.``, ...) that fits the network best."""
    best, best_hits = state, -1
    for prefix in _PREFIXES:
        stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        hits = len(target_keys & stripped.keys())
        if hits > best_hits:
            best, best_hits = stripped, hits
    return best


def load_into(model: AttributeClassifier, state: dict, origin: str = "weights") -> dict:
    """Copy ``state`` into ``model.net`` after checking every tensor's presence and shape."""
    target = model.net.state_dict()
    state = _strip_prefix(state, set(target))
    optional = ("AuxLogits.",) if model.backbone == "inception_v3" else ()  # some files have no auxiliary head
    mismatched, missing, loaded, kept_head = [], [], {}, []
    for key, tensor in target.items():
        if model.is_head(key):
            if key in state and tuple(state[key].shape) == tuple(tensor.shape):
                loaded[key] = state[key]
            else:
                kept_head.append(key)
            continue
        if key not in state:
            if not key.startswith(optional):
                missing.append(key)
            continue
        if tuple(state[key].shape) != tuple(tensor.shape):
            mismatched.append(f"{key}: {tuple(state[key].shape)} in the file, {tuple(tensor.shape)} in {model.backbone}")
        else:
            loaded[key] = state[key]
    unexpected = sorted(k for k in state if k not in target and not model.is_head(k))
    if mismatched or missing or unexpected:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} tensor(s) of another shape (e.g. {'; '.join(mismatched[:2])})")
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} not in {model.backbone} (e.g. {', '.join(unexpected[:3])})")
        raise WeightsError(f"{origin}: these weights do not fit the {model.backbone} backbone: "
                           + "; ".join(parts) + ". Were they saved from another architecture?")
    with torch.no_grad():
        for key, value in loaded.items():
            target[key].copy_(value.to(target[key].dtype))
    return {"source": origin, "tensors_loaded": len(loaded), "head_initialised": kept_head}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
