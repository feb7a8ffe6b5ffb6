"""The latent explorer in the browser (``facevae serve``): a FastAPI app over trained runs.

It sits above the analyses it uses and below the command line only; nothing else imports it. It needs
the ``serve`` extra (``pip install 'facevae[serve]'``: FastAPI, uvicorn, python-multipart and the face
detector).
"""
