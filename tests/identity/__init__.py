"""Tests of server.identity: gRPC clients, status mapping and the static identity provider."""
