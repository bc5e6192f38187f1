"""``python -m model_export.cli``: the ``tailor`` command without its console script."""

from __future__ import annotations

import sys

from model_export.cli import main

sys.exit(main())
