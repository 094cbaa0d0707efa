"""The certs service's domain, below the HTTP server and the scheduler.

It owns the use cases (issue, renew, rotate, revoke, download), the policies (key sizes, renewal
lifetime), CRL publishing, the settings, the identity clients and the opening of the authority,
store and clients from the settings. It imports ``hsm`` and ``repository``, never ``server`` or
``scheduler`` and never the development tools.
"""
