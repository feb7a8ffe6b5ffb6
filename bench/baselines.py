"""The plain baselines the benchmarks measure facevae against, shared by bench/data.py and bench/train.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


class JpegFolderDataset(torch.utils.data.Dataset):
    """The per-item baseline that decodes every JPEG on every epoch, as common VAE code does.

    ``src`` is a CelebA folder; items are (image, attribute row as 0/1) so a CVAE sees real conditions.
    """

    def __init__(self, src: Path):
        import torchvision.transforms.v2 as T

        from facevae.data.celeba_files import parse_attr_txt

        ids, self.attribute_names, attributes = parse_attr_txt(src / "list_attr_celeba.txt")
        folder = src / "img_align_celeba"
        self.paths = [folder / i for i in ids]
        self.attributes = torch.from_numpy(attributes.astype(np.float32))
        self.transform = T.Compose([T.PILToTensor(), T.CenterCrop(148), T.Resize(64, antialias=True),
                                    T.ToDtype(torch.float32, scale=True)])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB")), self.attributes[i]
