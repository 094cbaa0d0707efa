"""The demo identity provider: a real gRPC server speaking the Mainflux things and auth protocols
from a static file of users, things and grants. For the embedded default and the tests only."""
