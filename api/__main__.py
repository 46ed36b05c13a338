"""Run only the api part: python -m api (same as gridwatch serve --only api)."""

from core.cli import serve

if __name__ == "__main__":
    serve(only="api")
