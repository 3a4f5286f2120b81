"""`python -m service ...` is the same as the `touchflow` command."""

from service.cli import run

if __name__ == "__main__":
    run()
