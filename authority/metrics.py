"""Prometheus metrics of the domain: certificates issued and revoked, the current CRL."""

from prometheus_client import Counter, Gauge

CERTS_ISSUED = Counter("certs_issued", "Certificates issued (issue, renew, rotate).")
CERTS_REVOKED = Counter("certs_revoked", "Certificates revoked.")
CRL_ENTRIES = Gauge("certs_crl_entries", "Entries in the current CRL.",
                    multiprocess_mode="max")
CRL_NUMBER = Gauge("certs_crl_number", "Number of the current CRL.", multiprocess_mode="max")
CRL_THIS_UPDATE = Gauge("certs_crl_this_update_seconds", "thisUpdate of the current CRL (Unix).",
                        multiprocess_mode="max")
