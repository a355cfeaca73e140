"""`python -m kdcompress ...` (and `accelerate launch -m kdcompress distill ...`)."""

from kdcompress.cli import app

app()
