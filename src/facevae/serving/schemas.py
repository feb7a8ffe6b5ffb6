"""What the explorer's API accepts and answers, as pydantic models: every bound here is checked before any
model code runs, and a request outside them is a 422 naming the field."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

MAX_ABS_CODE = 8.0  # prior standard deviations: far past anything a prior or posterior gives
MAX_TEMPERATURE = 2.0
MIN_TEMPERATURE = 0.1  # at 0 every prior sample is the same point, and a BatchNorm readjustment on it divides by 0
MAX_SEED = 2**31 - 1
MAX_INDEX = 10**9
MAX_OVERRIDES = 4096
NAME_LENGTH = 100

Code = Annotated[float, Field(ge=-MAX_ABS_CODE, le=MAX_ABS_CODE, allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=NAME_LENGTH)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FromTest(Strict):
    kind: Literal["test"]
    index: int = Field(ge=0, le=MAX_INDEX, description="position in the run's test split")


class FromPrior(Strict):
    kind: Literal["prior"]
    seed: int = Field(ge=0, le=MAX_SEED)
    temperature: float = Field(1.0, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, allow_inf_nan=False)


class FromUpload(Strict):
    kind: Literal["upload"]
    id: str = Field(pattern=r"^[0-9a-f]{16}$", description="as POST /api/uploads answered")


FaceRef = Annotated[Union[FromTest, FromPrior, FromUpload], Field(discriminator="kind")]


class FaceQuery(Strict):
    face: FaceRef
    group: Name | None = Field(None, description="a latent group (default: the model's top group)")


class Morph(Strict):
    to: FaceRef
    t: Share = Field(description="0: the face as edited, 1: the other face")


class DecodeQuery(Strict):
    face: FaceRef
    group: Name | None = Field(None, description="the group the dimensions in values belong to")
    values: dict[int, Code] = Field(default_factory=dict, max_length=MAX_OVERRIDES,
                                    description="latent dimension of the group → value (prior s.d.)")
    conditions: dict[Name, Share] = Field(default_factory=dict, max_length=MAX_OVERRIDES,
                                          description="condition attribute → value in [0, 1]")
    morph: Morph | None = None
    format: Literal["png", "webp"] = "png"


class OriginalQuery(Strict):
    face: FaceRef


class Problem(BaseModel):
    detail: str


class RunSummary(BaseModel):
    id: str
    path: str
    model: str
    image_size: int


class RunList(BaseModel):
    runs: list[RunSummary]


class Group(BaseModel):
    name: str
    size: int


class RunInfo(BaseModel):
    id: str
    path: str
    label: str
    model: str
    image_size: int
    latent_units: int
    groups: list[Group]
    default_group: str
    conditions: list[str]
    test_faces: int


class Slider(BaseModel):
    dim: int
    label: str
    name: str | None
    score: float | None
    kl: float
    active: bool


class Sliders(BaseModel):
    group: str
    sliders: list[Slider]
    active: int
    size: int
    names_from: str | None
    note: str


class FaceSummary(BaseModel):
    face: Union[FromTest, FromPrior, FromUpload]
    label: str
    group: str
    values: dict[int, float]
    conditions: dict[str, float]
    attributes_known: bool
    original: bool


class Upload(BaseModel):
    face: FromUpload
    face_found: bool
    alignment: str
    width: int
    height: int
