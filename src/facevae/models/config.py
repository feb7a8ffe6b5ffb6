"""The VAE family's settings: one flat dataclass of plain types, so it round-trips through YAML/JSON.

Each field is declared once, with its help and its checks; ``facevae train`` and ``facevae sweep``
derive their flags from it (see facevae.common.settings).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from facevae.common.settings import check_settings, flag_name, setting

# The names of the models; facevae.models builds its registry of classes on them (this module cannot
# import the classes: they import it).
MODEL_NAMES = ("vae", "cvae", "betavae", "hvae")
IMAGE_SIZES = (32, 64, 128)
CONDITION_MODES = ("vector", "embedding")
LIKELIHOOD_NAMES = ("discretized_logistic", "gaussian", "bernoulli", "logistic_mixture")
NORMS = ("batch", "group")
LOSSES = ("beta", "tcvae", "capacity")
# Beyond this the two linear layers around z dominate the model (and its checkpoints).
LARGE_LATENT_DIM = 4096
MIN_HVAE_TOP_SIZE = 2  # the top latent scale's side: 1x1 would leave its 5x5 convolutions nothing but padding

# The report's CVAE conditioned on hair colour, beard, gender and pale skin through embeddings;
# in CelebA's binary attributes that is these seven.
REPORT_CONDITION_NAMES = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "No_Beard", "Male", "Pale_Skin"]


def is_conditional_model(model: str, conditional: bool) -> bool:
    """Whether the model named ``model`` reads a condition c (``conditional`` matters for betavae and hvae)."""
    return model == "cvae" or (model in ("betavae", "hvae") and conditional)


@dataclass
class ModelConfig:
    """Settings of a model of the VAE family.

    "vae" is never conditional, "cvae" always, "betavae" when ``conditional`` is true; betavae needs
    an effective β > 1, otherwise it is a plain VAE/CVAE, which honour ``beta`` too (use those for
    β sweeps that include 1). ``condition_names`` are the columns of ``c``, in order (the caller's
    choice; typically all the dataset's attributes, or REPORT_CONDITION_NAMES). Every likelihood is
    discrete (see likelihoods.py), so bits/dim are valid for each; the Bernoulli's only on binary images.
    """

    model: str = setting("vae", "vae (never conditional), cvae (always), betavae (conditional with --conditional; "
                         "needs an effective beta > 1), hvae (hierarchical, NVAE-like; conditional with "
                         "--conditional)", choices=MODEL_NAMES)
    latent_dim: int = setting(64, "M, the size of z", at_least=1)
    width: int = setting(1, "channel multiplier k: the encoder has 32k, 64k, 128k, 256k channels (the report's k=1,2,4; "
                         "1 learns fastest on a CPU, 2 or 4 for long runs on a GPU)",
                         at_least=1)
    image_size: int = setting(64, "side of the square images the model sees", choices=IMAGE_SIZES)
    channels: int = setting(3, "image channels (packed datasets hold RGB: 3)", at_least=1)
    conditional: bool = setting(False, "betavae, hvae: condition on attributes too")
    condition_names: list[str] = setting([], "the attributes conditioned on, in the order of the columns of c")
    condition_mode: str = setting("vector", "vector: the 0/1 attribute vector itself; embedding: one learned vector "
                                  "per attribute value, summed", choices=CONDITION_MODES)
    condition_dim: int = setting(32, "size of the condition embeddings (embedding mode)", at_least=1)
    beta: float = setting(1.0, "weight of the KL term", above=0)
    beta_norm: float | None = setting(None, "normalised beta (Higgins et al. 2017): beta = beta_norm·N/M, N = C·H·W, "
                                      "comparable across latent and input sizes; overrides --beta", above=0)
    likelihood: str = setting("discretized_logistic", "discretized_logistic (mean and scale per sub-pixel) or "
                              "gaussian (discretised, one learned scale per channel: MSE-like and fast) or "
                              "bernoulli (black or white per sub-pixel: binary images such as dSprites) or "
                              "logistic_mixture (PixelCNN++'s mixture of --mixtures logistics per RGB pixel)",
                              choices=LIKELIHOOD_NAMES)
    free_bits: float = setting(0.0, "nats per latent dimension below which its batch-mean KL is not penalised "
                               "(Kingma et al. 2016; 0: off)", at_least=0)
    kl_warmup_steps: int = setting(0, "the KL weight ramps linearly from 0 to beta over these many steps (0: off)",
                                   at_least=0)
    norm: str = setting("batch", "batch (BatchNorm) or group (GroupNorm, independent of the batch)", choices=NORMS)
    loss: str = setting("beta", "what the flat models add to the reconstruction: beta (beta·KL), tcvae "
                             "(beta-TCVAE: beta weighs only the total correlation) or capacity (gamma·|KL - C|, "
                             "C rising over training)", choices=LOSSES)
    dataset_size: int = setting(0, "tcvae: training images, for the minibatch-weighted estimate of q(z) "
                                "(0: taken from the data by facevae train)", at_least=0)
    capacity_max: float = setting(25.0, "capacity: the KL target at the end of the annealing, nats (Burgess et al.)",
                                  at_least=0)
    capacity_steps: int = setting(100000, "capacity: steps over which the target rises from 0", at_least=0)
    capacity_gamma: float = setting(1000.0, "capacity: weight of |KL - C|", above=0)
    hvae_groups: list[int] = setting([2, 2], "hvae: latent groups per scale, NVAE's order: the finest scale first "
                                     "(8,4,2 = 8 groups at the finest latent scale, 4 at the next, 2 at the top)",
                                     group="hierarchical model")
    hvae_channels: int = setting(16, "hvae: channels of the stem, doubled at every downsampling", at_least=1,
                                 group="hierarchical model")
    hvae_latent_channels: int = setting(8, "hvae: channels of every latent group (NVAE: 20)", at_least=1,
                                        group="hierarchical model")
    hvae_cells: int = setting(1, "hvae: encoder and decoder cells per latent group (NVAE: 2)", at_least=1,
                              group="hierarchical model")
    hvae_pre_blocks: int = setting(1, "hvae: downsampling blocks before the finest latent scale (and upsampling "
                                   "after it)", at_least=0, group="hierarchical model")
    hvae_expansion: int = setting(6, "hvae: expansion of the decoder cells' inverted residual (NVAE: 6)", at_least=1,
                                  group="hierarchical model")
    mixtures: int = setting(10, "logistic mixture components of hvae's likelihood and of --likelihood "
                            "logistic_mixture (PixelCNN++, NVAE: 10)", at_least=1)
    spectral_lambda: float = setting(0.1, "hvae: weight of the spectral regularisation of every convolution and "
                                     "the BatchNorm scales (NVAE: 0.1)", at_least=0, group="hierarchical model")

    def __post_init__(self):
        check_settings(self)
        if self.is_conditional and not self.condition_names:
            raise ValueError(f"model config: {self.model!r} is conditional but condition_names is empty; "
                             "give the attribute names to condition on")
        if len(set(self.condition_names)) != len(self.condition_names):
            raise ValueError("model config: condition_names has duplicates")
        if not self.hvae_groups or min(self.hvae_groups) < 1:
            raise ValueError(f"--hvae-groups must be positive group counts per scale, e.g. 4,2; got {self.hvae_groups}")
        if self.model == "hvae":
            if self.loss != "beta":
                raise ValueError(f"--loss {self.loss} is for the flat models; hvae weighs its KL by beta "
                                 "(with NVAE's KL balancing)")
            if self.likelihood != "discretized_logistic":
                raise ValueError(f"--likelihood {self.likelihood} is for the flat models; hvae's likelihood is a "
                                 "mixture of discretised logistics (--mixtures)")
            if self.channels != 3:
                raise ValueError("--channels: hvae models RGB images (its likelihood mixes the three channels); got "
                                 f"{self.channels}")
            self.hvae_scales()  # the groups must fit the image size
        if self.likelihood == "logistic_mixture" and self.channels != 3:
            raise ValueError(f"--likelihood logistic_mixture models RGB pixels (it mixes the three channels); "
                             f"--channels is {self.channels}")
        if self.model == "betavae" and self.effective_beta <= 1:
            raise ValueError(f"model config: betavae needs beta > 1 (or a beta_norm giving one), got "
                             f"{self.effective_beta:g}; use model 'vae' or 'cvae' for beta <= 1")

    def size_warning(self) -> str | None:
        """A warning when the settings are legal but make a model far larger than anything useful."""
        if self.latent_dim <= LARGE_LATENT_DIM:
            return None
        top = 256 * self.width * 16  # features of the encoder's last level (at most 256k channels, 4×4)
        gigabytes = 3 * self.latent_dim * top * 4 / 1e9
        return (f"{flag_name('latent_dim')} {self.latent_dim} makes huge checkpoints: the layers around z alone "
                f"hold up to {gigabytes:.1f} GB of weights")

    def hvae_scales(self) -> list[tuple[int, int, int]]:
        """(resolution, channels, groups) of each latent scale of the hierarchical model, the top (coarsest) first."""
        finest = self.image_size // 2 ** self.hvae_pre_blocks
        top = finest // 2 ** (len(self.hvae_groups) - 1)
        if top < MIN_HVAE_TOP_SIZE:
            raise ValueError(f"--hvae-groups {','.join(map(str, self.hvae_groups))}: {len(self.hvae_groups)} latent "
                             f"scales after {self.hvae_pre_blocks} pre-processing block(s) leave a {self.image_size}x"
                             f"{self.image_size} image a {max(top, 0)}x{max(top, 0)} top scale (at least "
                             f"{MIN_HVAE_TOP_SIZE}x{MIN_HVAE_TOP_SIZE}); use fewer scales or --hvae-pre-blocks, or "
                             "a larger --image-size")
        scales = [(finest // 2**s, self.hvae_channels * 2 ** (self.hvae_pre_blocks + s), groups)
                  for s, groups in enumerate(self.hvae_groups)]
        return scales[::-1]

    @property
    def latent_units(self) -> int:
        """M: every latent unit of the model (the hierarchical model's groups all together)."""
        if self.model != "hvae":
            return self.latent_dim
        return sum(groups * self.hvae_latent_channels * res * res for res, _, groups in self.hvae_scales())

    @property
    def is_conditional(self) -> bool:
        return is_conditional_model(self.model, self.conditional)

    @property
    def num_conditions(self) -> int:
        return len(self.condition_names) if self.is_conditional else 0

    @property
    def input_dim(self) -> int:
        """N, the number of sub-pixels of one image."""
        return self.channels * self.image_size * self.image_size

    @property
    def effective_beta(self) -> float:
        if self.beta_norm is None:
            return self.beta
        return self.beta_norm * self.input_dim / self.latent_units

    def kl_weight(self, step: int) -> float:
        """The KL weight at optimiser step ``step``: β, ramped linearly from 0 during warm-up."""
        if self.kl_warmup_steps == 0:
            return self.effective_beta
        return self.effective_beta * min(1.0, max(step, 0) / self.kl_warmup_steps)

    def condition_index(self, attribute_names: list[str]) -> list[int]:
        """Columns of a full attribute matrix (named ``attribute_names``) that make this model's ``c``."""
        missing = [n for n in self.condition_names if n not in attribute_names]
        if missing:
            raise ValueError(f"condition attributes not in the data: {', '.join(missing)}")
        return [attribute_names.index(n) for n in self.condition_names]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, strict: bool = False) -> "ModelConfig":
        """Build from a mapping; unknown keys are ignored (or rejected with ``strict``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if strict and unknown:
            raise ValueError(f"model config: unknown keys {', '.join(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in names})

