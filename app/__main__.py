"""`python -m app ...` is the `gridwatch` command (for a checkout without the console script)."""

from app.cli import app

if __name__ == "__main__":
    app()
