"""Tests of authority.identity: gRPC clients, status mapping and the static identity provider."""
