"""``python -m hierbench.cli``: the ``hierbench`` command (the two-process runner starts the cloud
role this way)."""

from __future__ import annotations

import sys

from hierbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
