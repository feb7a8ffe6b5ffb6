"""``facevae dims|report``: name the latent dimensions and put a run on one HTML page."""


def register(subparsers) -> None:
    pass
