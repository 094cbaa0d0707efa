"""`python3 -m devtools.identity` runs the static identity provider (devtools.identity.provider)."""

import sys

from devtools.identity.provider import main

sys.exit(main())
