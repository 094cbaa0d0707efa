"""Development tools, never imported by the product: the demo identity provider, the quickstart
and SoftHSM2 provisioning. ``scripts/run`` and the test suite use them."""
