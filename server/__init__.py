"""The HTTP service: Litestar app, configuration, identity clients and the use cases of the CA."""
