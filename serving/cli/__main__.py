"""``python -m serving.cli``: the same as the ``slm-fleet`` command."""

import sys

from serving.cli.main import main

sys.exit(main())
