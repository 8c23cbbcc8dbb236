"""``python -m nextaction …`` (and ``torchrun -m nextaction …``) runs the command line."""

from nextaction.cli import main

if __name__ == "__main__":
    main()
