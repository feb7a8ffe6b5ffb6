"""``facevae serve``: the latent explorer in the browser."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    from facevae.cli import add_command

    p = add_command(
        subparsers, "serve", cmd_serve,
        "explore trained models in the browser: latent sliders, attributes, samples, morphs, your own photo",
        "facevae serve runs/demo/cvae",
        description="Start a local web page over a run, or over every finished run under a folder (a menu "
        "chooses). A slider per active latent dimension, named as `facevae dims` named them (any latent group "
        "of a hierarchical model); a switch and slider per condition attribute; test faces, prior samples at "
        "a temperature, or an uploaded photo (aligned like CelebA's faces first); a morph between two faces; "
        "the face as PNG. The page's state is in its address. Listens on 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("runs", type=Path, metavar="RUN_OR_RUNS_DIR", help="a finished run, or a folder of runs")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface, with a "
                   "warning: the page has no login)")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (0: any free one)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request (photo) accepted, MiB")


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"facevae serve needs the serve extra ({exc.name} is missing): "
                         "pip install 'facevae[serve]'") from None
    from facevae.serving.app import create_app
    from facevae.serving.server import address_of, bind, exposure_warning, run, warm_up

    if not args.max_upload_mb > 0:
        raise ValueError(f"--max-upload-mb must be above 0, got {args.max_upload_mb:g}")
    app = create_app(args.runs, max_upload_bytes=int(args.max_upload_mb * 2**20))
    for note in app.state.skipped:
        print(f"skipped {note}", file=sys.stderr)
    warning = exposure_warning(args.host)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    sock = bind(args.host, args.port)
    for line in warm_up(app):
        print(f"opened {line}")
    runs = len(app.state.catalog.ids())
    print(f"facevae explorer: {address_of(sock)} ({runs} run{'s' if runs != 1 else ''}; Ctrl-C stops it)", flush=True)
    run(app, sock)
    return 0
