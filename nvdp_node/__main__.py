"""``python -m nvdp_node`` is the ``nvdp`` command."""

import sys

from nvdp_node.app.cli import main

sys.exit(main())
