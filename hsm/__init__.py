"""PKCS#11 access and the signing core.

The CA key lives in the token and signs certificates and CRLs there; nothing here knows HTTP or SQL.
"""
