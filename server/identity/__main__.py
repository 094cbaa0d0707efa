"""`python3 -m server.identity` runs the static identity provider (see server.identity.provider)."""

import sys

from .provider import main

sys.exit(main())
