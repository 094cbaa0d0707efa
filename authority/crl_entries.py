"""The revoked, unexpired certificates a process has read for its CRLs, kept compactly: their
CRL entries as one byte string in seq order, and their seqs, entry lengths and expiry times
as arrays (a million revocations are about 50 MB of entries and 24 MB of arrays, not a million
objects)."""

import bisect
import math
from array import array

from repository.crl_block import CrlEntryBlock


class RevokedEntries:
    """Entries appended in seq order; the ones of certificates that expired are dropped."""

    def __init__(self) -> None:
        self._der = bytearray()
        self._seqs: array[int] = array("q")
        self._lengths: array[int] = array("q")
        self._expiry: array[float] = array("d")
        self._soonest = math.inf

    def __len__(self) -> int:
        return len(self._seqs)

    def append(self, block: CrlEntryBlock) -> None:
        """Add ``block`` (every entry stored, seqs above the ones held)."""
        if not len(block):
            return
        if block.missing or (self._seqs and block.seqs[0] <= self._seqs[-1]):
            raise ValueError("entries must be stored and come in seq order")
        self._der += block.der
        self._seqs += block.seqs
        self._lengths += block.lengths
        self._expiry += block.expiry
        self._soonest = min(self._soonest, min(block.expiry))

    def upto(self, seq: int) -> tuple[bytes, int]:
        """The entries of the revocations up to ``seq``, concatenated, and how many they are."""
        count = bisect.bisect_right(self._seqs, seq)
        end = len(self._der) - sum(self._lengths[count:])
        with memoryview(self._der) as view:
            return bytes(view[:end]), count

    def drop_expired(self, now: float) -> None:
        """Forget the revocations of certificates expired by ``now`` (a CRL needs them no
        more); a pass over the arrays only when one has expired since the last one."""
        if now < self._soonest:
            return
        gone = [i for i, moment in enumerate(self._expiry) if moment <= now]
        der, seqs, lengths, expiry = bytearray(), array("q"), array("q"), array("d")
        start = offset = 0
        for stop in [*gone, len(self._seqs)]:
            if stop > start:
                size = sum(self._lengths[start:stop])
                with memoryview(self._der) as view:
                    der += view[offset:offset + size]
                seqs += self._seqs[start:stop]
                lengths += self._lengths[start:stop]
                expiry += self._expiry[start:stop]
                offset += size
            if stop < len(self._seqs):
                offset += self._lengths[stop]
            start = stop + 1
        self._der, self._seqs, self._lengths, self._expiry = der, seqs, lengths, expiry
        self._soonest = min(expiry, default=math.inf)
