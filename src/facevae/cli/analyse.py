"""``facevae reconstruct|sample|traverse|edit``: look at what a trained run learned."""


def register(subparsers) -> None:
    pass
