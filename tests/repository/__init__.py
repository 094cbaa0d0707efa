"""Tests of the certificate store on SQLite and PostgreSQL."""
