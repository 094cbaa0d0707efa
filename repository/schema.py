"""The tables at the head migration, for building queries (the migrations own the DDL).

``certs`` and ``revoked_certs`` keep the Go service's names and column meanings; the rest is
what this service adds. A revoked certificate keeps its row in ``certs`` (``revoked_at`` set,
key destroyed) and gains one in ``revoked_certs``, which is what the CRL is built from.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    false,
)

from repository.coltypes import StringList, UTCDateTime

metadata = MetaData()

certs = Table(
    "certs",
    metadata,
    Column("serial", String(64), primary_key=True),
    Column("thing_id", Text, nullable=False),
    Column("owner_id", Text),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("not_before", UTCDateTime),
    Column("client_cert", Text, nullable=False),
    # Plaintext key of a row imported from the Go service, until Store.seal_legacy_keys runs.
    Column("client_key", Text),
    Column("private_key_enc", LargeBinary),
    Column("issuing_ca", Text),
    Column("ca_chain", StringList),
    Column("private_key_type", Text, nullable=False),
    Column("key_bits", Integer, nullable=False),
    Column("downloaded", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("serial_base", SmallInteger, nullable=False),
    Column("revoked_at", UTCDateTime),
    Column("revocation_reason", Text),
    Column("lease_owner", Text),
    Column("lease_expires_at", UTCDateTime),
    # Issued from the device's own CSR: the service never held its private key.
    Column("device_key", Boolean, nullable=False, server_default=false()),
)

revoked_certs = Table(
    "revoked_certs",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("serial", String(64), nullable=False, unique=True),
    Column("thing_id", Text, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=False),
    Column("reason", Text),
    Column("expires_at", UTCDateTime),
    Column("serial_base", SmallInteger, nullable=False),
    # The revokedCertificates entry of the CRL (DER), written with the revocation; NULL for
    # rows revoked before migration 0006 until a CRL build fills it in.
    Column("crl_entry", LargeBinary),
)

crl_state = Table(
    "crl_state",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("crl_number", BigInteger, nullable=False),
    Column("revocation_seq", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("event_key", String(32), nullable=False, unique=True),
    Column("subject", Text, nullable=False),
    Column("payload_enc", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("lease_owner", Text),
    Column("lease_expires_at", UTCDateTime),
)

CRL_STATE_ID = 1

# The audit trail (SPEC 15): one hash-chained row per change, written in the change's
# transaction; ``audit_chain`` is the single chain-head row that appends serialise on.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("email", Text),
    Column("action", Text, nullable=False),
    Column("thing_id", Text, nullable=False),
    Column("issued", Text, nullable=False),
    Column("revoked", Text, nullable=False),
    Column("downloaded", Text, nullable=False),
    Column("reason", Text),
    Column("client", Text),
    Column("request_id", Text),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

audit_chain = Table(
    "audit_chain",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

AUDIT_CHAIN_ID = 1

# The newest signed CRL (SPEC 7: one CRL for the whole service); crl_number 0: none yet.
published_crl = Table(
    "published_crl",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("crl_number", BigInteger, nullable=False),
    Column("revocation_seq", BigInteger, nullable=False),
    Column("this_update", UTCDateTime),
    Column("next_update", UTCDateTime),
    Column("entries", BigInteger, nullable=False),
    Column("der", LargeBinary, nullable=False),
)

PUBLISHED_CRL_ID = 1
