"""Firestore's request limits, as the repositories respect them."""

from collections.abc import Iterator, Sequence
from typing import Any

# A WriteBatch commits at most 500 writes, and one commit request must stay under 10 MiB.
MAX_BATCH_WRITES = 500
MAX_BATCH_BYTES = 8 * 1024 * 1024
# batchGet answers are streamed, but one request naming thousands of documents is needlessly large.
MAX_GET_ALL_REFS = 500


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """`items` in slices of at most `size`: one request (commit, batchGet) each."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
