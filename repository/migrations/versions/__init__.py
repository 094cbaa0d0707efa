"""Revisions of the certificate store schema."""
