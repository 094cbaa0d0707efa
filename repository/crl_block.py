"""The current revocations' stored CRL entries read as one block: their DER concatenated in
seq order and, alongside, each one's seq, length and expiry as arrays.

On PostgreSQL a block is one aggregated row (the bytes of each column concatenated on the
server): a million revocations read as rows cost seconds in the driver, as one row a fraction
of one. SQLite reads rows. Either way the caller gets the same block.
"""

import itertools
import math
import operator
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from repository import _queries


@dataclass(frozen=True, slots=True)
class CrlEntryBlock:
    """Revocations in seq order: ``seqs``, ``lengths`` (of each entry in ``der``; -1 for one
    stored without its entry, which ``der`` then lacks), ``expiry`` (POSIX seconds, infinity
    for a revocation imported without one) and ``der``, the stored entries one after another."""

    seqs: "array[int]"
    lengths: "array[int]"
    expiry: "array[float]"
    der: bytes

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def missing(self) -> bool:
        """Whether any revocation of the block has no stored entry."""
        return bool(self.lengths) and min(self.lengths) < 0


# One aggregated row: the entries concatenated, and per revocation a 24-byte record of seq,
# entry length (-1: none stored) and expiry (POSIX seconds; infinity: none), big-endian. The
# subquery picks the rows in seq order; both aggregates see them in the same order, and the
# reader checks that the seqs ascend (else it reads rows). Read with a binary-format cursor:
# as text, the bytes would cross the wire hex-encoded, twice their size.
_BLOCK_PG = (
    "SELECT string_agg(crl_entry, ''::bytea),"
    " string_agg(int8send(seq) || int8send(coalesce(length(crl_entry), -1)::int8)"
    "            || float8send(coalesce(extract(epoch FROM expires_at)::float8,"
    "                                   'Infinity'::float8)), ''::bytea)"
    " FROM (SELECT seq, crl_entry, expires_at FROM revoked_certs"
    "       WHERE seq > %(b_after)s AND seq <= %(b_through)s"
    "         AND (expires_at IS NULL OR expires_at > %(b_now)s)"
    "       ORDER BY seq LIMIT %(b_limit)s) AS picked"
)
_RECORD = 3  # numbers per record


def read(conn: Connection, params: dict[str, Any]) -> CrlEntryBlock:
    """The block of ``params`` (b_after, b_through, b_now, b_limit)."""
    if conn.dialect.name == "postgresql":
        block = _aggregated(conn, params)
        if block is not None:
            return block
    return _from_rows(conn.execute(_queries.CRL_ENTRY_BLOCK_ROWS, params).all())


def _aggregated(conn: Connection, params: dict[str, Any]) -> CrlEntryBlock | None:
    driver = conn.connection.driver_connection
    try:
        with driver.cursor(binary=True) as cursor:  # type: ignore[union-attr]
            der, records = cursor.execute(_BLOCK_PG, params).fetchone()
    except psycopg.Error as exc:
        if driver.broken or driver.closed:  # type: ignore[union-attr]
            conn.invalidate()
        # As SQLAlchemy's own statements raise it, so the store's retry and errors apply.
        raise sa_exc.DBAPIError.instance(_BLOCK_PG, params, exc, psycopg.Error) from exc
    whole = _numbers("q", records)
    expiry = _numbers("d", records)[2::_RECORD]
    block = CrlEntryBlock(whole[0::_RECORD], whole[1::_RECORD], expiry, bytes(der or b""))
    if len(whole) % _RECORD or not _ascending(block.seqs):
        return None
    stored = sum(block.lengths) if not block.missing else sum(n for n in block.lengths if n > 0)
    if stored != len(block.der):
        raise RuntimeError("CRL entry block does not add up")
    return block


def _ascending(seqs: "array[int]") -> bool:
    return all(map(operator.lt, seqs, itertools.islice(seqs, 1, None)))


def _numbers(kind: str, data: bytes | None) -> "array[Any]":
    """The big-endian 8-byte numbers of ``data`` (int8send/float8send)."""
    numbers = array(kind)
    numbers.frombytes(bytes(data or b""))
    if sys.byteorder == "little":
        numbers.byteswap()
    return numbers


def _from_rows(rows: Sequence[Any]) -> CrlEntryBlock:
    seqs, lengths, expiry = array("q"), array("q"), array("d")
    ders: list[bytes] = []
    for seq, der, expires in rows:
        seqs.append(seq)
        if der is None:
            lengths.append(-1)
        else:
            ders.append(bytes(der))
            lengths.append(len(der))
        expiry.append(math.inf if expires is None else float(expires))
    return CrlEntryBlock(seqs, lengths, expiry, b"".join(ders))
