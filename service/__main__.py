"""`python -m service ...` is the same as the `touchflow` command."""

from service.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
