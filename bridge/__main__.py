"""``python -m bridge``: the same CLI as the ``bridge`` script."""

from bridge.cli import main

if __name__ == "__main__":
    main()
