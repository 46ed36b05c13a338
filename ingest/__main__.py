"""Run only the ingest part: python -m ingest (same as gridwatch serve --only ingest)."""

from core.cli import serve

if __name__ == "__main__":
    serve(only="ingest")
