"""Random identifiers: their form and their alphabet."""

from __future__ import annotations

import re
from collections import Counter

from vault.service.ids import new_id


def test_ids_have_the_prefix_and_twelve_crockford_characters() -> None:
    ids = {new_id("EV") for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch("EV-[0-9A-HJKMNP-TV-Z]{12}", i) for i in ids)
    assert re.fullmatch("PKG-[0-9A-HJKMNP-TV-Z]{5}", new_id("PKG", 5))


def test_every_character_of_the_alphabet_is_used_about_evenly() -> None:
    counts = Counter(c for _ in range(4000) for c in new_id("EV")[3:])
    assert sorted(counts) == sorted("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    # 48,000 draws, 1,500 expected per character; 6 standard deviations either way.
    assert all(1260 < n < 1740 for n in counts.values()), counts
