"""CelebA's 40 binary attributes, in the order of ``list_attr_celeba.txt``."""

# Approximate positive rates over the full dataset, as published with CelebA; used to make the
# synthetic faces as imbalanced as the real ones and as a reference in exploration plots.
CELEBA_ATTRIBUTE_RATES: dict[str, float] = {
    "5_o_Clock_Shadow": 0.11,
    "Arched_Eyebrows": 0.27,
    "Attractive": 0.51,
    "Bags_Under_Eyes": 0.20,
    "Bald": 0.02,
    "Bangs": 0.15,
    "Big_Lips": 0.24,
    "Big_Nose": 0.23,
    "Black_Hair": 0.24,
    "Blond_Hair": 0.15,
    "Blurry": 0.05,
    "Brown_Hair": 0.21,
    "Bushy_Eyebrows": 0.14,
    "Chubby": 0.06,
    "Double_Chin": 0.05,
    "Eyeglasses": 0.07,
    "Goatee": 0.06,
    "Gray_Hair": 0.04,
    "Heavy_Makeup": 0.39,
    "High_Cheekbones": 0.45,
    "Male": 0.42,
    "Mouth_Slightly_Open": 0.48,
    "Mustache": 0.04,
    "Narrow_Eyes": 0.12,
    "No_Beard": 0.84,
    "Oval_Face": 0.28,
    "Pale_Skin": 0.04,
    "Pointy_Nose": 0.28,
    "Receding_Hairline": 0.08,
    "Rosy_Cheeks": 0.07,
    "Sideburns": 0.06,
    "Smiling": 0.48,
    "Straight_Hair": 0.21,
    "Wavy_Hair": 0.32,
    "Wearing_Earrings": 0.19,
    "Wearing_Hat": 0.05,
    "Wearing_Lipstick": 0.47,
    "Wearing_Necklace": 0.12,
    "Wearing_Necktie": 0.07,
    "Young": 0.77,
}

CELEBA_ATTRIBUTES: list[str] = list(CELEBA_ATTRIBUTE_RATES)

# The official partition sizes (train, valid, test) of CelebA's list_eval_partition.txt.
CELEBA_PARTITION_SIZES = (162_770, 19_867, 19_962)

PARTITION_NAMES = ("train", "valid", "test")


def check_attribute_names(requested: list[str], available: list[str]) -> list[str]:
    """Return ``requested`` unchanged, or raise ValueError naming the unknown ones."""
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise ValueError(
            f"unknown attribute(s): {', '.join(unknown)}; available: {', '.join(available)}"
        )
    return requested
