"""The Litestar application: one controller per resource around the certs service."""
