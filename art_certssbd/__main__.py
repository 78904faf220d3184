"""``python -m art_certssbd``: the ``certssbd`` command."""

import sys

from art_certssbd.cli import main

sys.exit(main())
