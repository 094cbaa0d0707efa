"""Pages of a thing's certificates at every offset, from either end of the list: the same
items, order and total as sorting the thing's active certificates by hand, on both backends;
and the same pages of serials."""

from datetime import UTC, datetime, timedelta

from repository import Certificate, SerialEntry, SerialPage, Store
from tests.repository.helpers import make_cert

NOW = datetime.now(UTC).replace(microsecond=0)


def test_every_page_matches_a_sort_by_hand(store: Store) -> None:
    saved: list[Certificate] = []
    for i in range(41):
        # Some share an expiry time, so the serial decides their order.
        expires = NOW + timedelta(days=10 + i // 3)
        saved.append(store.save(make_cert("paged", expires_at=expires)))
    store.save(make_cert("other", expires_at=NOW + timedelta(days=11)))
    for cert in saved[::7]:
        store.revoke(cert.serial)
    active = sorted((c for c in saved if c not in saved[::7]),
                    key=lambda c: (c.expires_at, c.serial))
    fragment = active[5].serial[3:5]
    cases = [
        ({}, active),
        ({"serial": fragment}, [c for c in active if fragment in c.serial]),
        ({"expires_from": NOW + timedelta(days=13), "expires_to": NOW + timedelta(days=20)},
         [c for c in active
          if NOW + timedelta(days=13) <= c.expires_at <= NOW + timedelta(days=20)]),
    ]
    for filters, expected in cases:
        for limit in (0, 1, 4, 10, len(expected), 100):
            for offset in range(len(expected) + 3):
                page = store.list_by_thing("paged", offset=offset, limit=limit,
                                           **filters)
                assert page.total == len(expected), (filters, offset, limit)
                assert [c.serial for c in page.items] == [
                    c.serial for c in expected[offset:offset + limit]], (filters, offset, limit)
                serials = store.list_serials("paged", offset=offset, limit=limit, **filters)
                assert serials == SerialPage(page.total, offset, limit, tuple(
                    SerialEntry(c.serial, c.thing_id, c.expires_at, c.downloaded)
                    for c in page.items)), (filters, offset, limit)
    assert store.list_by_thing("nobody", offset=3).total == 0
    assert store.list_serials("nobody", offset=3) == SerialPage(0, 3, 10, ())
