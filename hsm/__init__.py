"""PKCS#11 access and the signing core: the CA key lives in the token and signs certificates and CRLs there."""
