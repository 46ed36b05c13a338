"""Run only the notify part: python -m notify (same as gridwatch serve --only notify)."""

from core.cli import serve

if __name__ == "__main__":
    serve(only="notify")
