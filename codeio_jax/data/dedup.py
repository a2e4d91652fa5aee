"""Deduplication: one record per program, however often the corpus holds it.

Two records are copies when their code is

  - the same program: equal normalised syntax trees (normalize.py: names, layout,
    comments, docstrings and annotations aside); or
  - nearly the same: the Jaccard similarity of their sets of `shingle`-token
    shingles (normalised tokens, names kept) is at least `threshold` (0.8), as
    estimated by MinHash (datasketch) over `num_perm` permutations; candidate
    pairs come from LSH banding (datasketch picks the bands for the threshold),
    so no pass compares every record with every other.

Which copy is kept depends on the records alone, never on their order or on how
a runner split the work: records are ordered by `(id, content digest, line)`,
and a record is dropped when one that sorts before it is its copy. Its error
row names that copy (`duplicate_of`, the match and the Jaccard estimate) and the
record kept in its place (`kept_id`: following `duplicate_of` until a record
that nothing earlier copies). Where copies chain (A~B, B~C, A not ~C), B and
C both go, as connected components would have it; C's row says so.

The same functions serve the local stage (stages.dedup_file) and Beam
(beam_pipeline.py: bucket entries sorted on the filesystem, each bucket's
links, each record's earliest copy).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
from typing import Any, Iterable, Iterator

from codeio_jax.data.normalize import CodeTokenError, module_digest, normalized_tokens

STAGE = "dedup"
DEFAULT_THRESHOLD = 0.8
_MINHASH_SEED = 1  # part of the settings' meaning: another seed, other estimates


class DedupError(ValueError):
    """A record that cannot be compared (no code, or code Python does not take)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    threshold: float = DEFAULT_THRESHOLD  # estimated Jaccard at or above which two records are copies
    num_perm: int = 128  # MinHash permutations: more is a finer estimate, at a cost per record
    shingle: int = 5  # tokens per shingle

    def __post_init__(self):
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"the dedup threshold must be in (0, 1], got {self.threshold}")
        if self.num_perm < 16:
            raise ValueError(f"num_perm must be at least 16, got {self.num_perm}")
        if self.shingle < 1:
            raise ValueError(f"shingle must be at least 1, got {self.shingle}")

    @functools.cached_property
    def bands(self) -> tuple[tuple[int, int], ...]:
        """(start, end) of each LSH band, as datasketch sizes them for the threshold."""
        from datasketch import MinHashLSH

        # datasketch's b*r for a threshold of exactly 1.0 still needs two bands;
        # just under it gives the same banding.
        return tuple(MinHashLSH(threshold=min(self.threshold, 0.999), num_perm=self.num_perm).hashranges)

    def as_dict(self) -> dict:
        return {"threshold": self.threshold, "num_perm": self.num_perm, "shingle": self.shingle,
                "seed": _MINHASH_SEED}


@dataclasses.dataclass(frozen=True)
class Signature:
    """What deduplication knows of one record."""

    key: tuple[str, str, int]  # (id, content digest, line): the earliest is kept
    exact: bytes  # the normalised tree's digest
    minhash: Any  # datasketch.LeanMinHash


@dataclasses.dataclass(frozen=True)
class Link:
    """`dropped` is a copy of `of`, which sorts before it."""

    dropped: tuple[str, str, int]
    of: tuple[str, str, int]
    match: str  # "exact" or "near"
    jaccard: float  # MinHash's estimate; 1.0 for an exact match


def signature(line: int, row: Any, settings: Settings) -> Signature:
    """The record's signature; raises DedupError."""
    from datasketch import LeanMinHash, MinHash

    code = row.get("refcode") if isinstance(row, dict) else None
    if not isinstance(code, str):
        raise DedupError("no `refcode` text to compare")
    try:
        exact = module_digest(code)
        tokens, _ = normalized_tokens(code)
    except CodeTokenError as exc:
        raise DedupError(str(exc)) from None
    size = min(settings.shingle, max(len(tokens), 1))
    shingles = {"\x1f".join(tokens[start:start + size]).encode("utf-8", "surrogatepass")
                for start in range(max(len(tokens) - size + 1, 1))}
    minhash = MinHash(num_perm=settings.num_perm, seed=_MINHASH_SEED)
    minhash.update_batch(sorted(shingles))
    content = hashlib.sha256(json.dumps(row, sort_keys=True, ensure_ascii=False).encode(
        "utf-8", "surrogatepass")).hexdigest()[:16]
    return Signature((str(row.get("id", "")), content, line), exact, LeanMinHash(minhash))


def buckets(sig: Signature, settings: Settings) -> Iterator[bytes]:
    """The buckets a record falls in: its tree's, and one per LSH band. Copies
    share at least one (exact ones always, near ones with LSH's probability)."""
    yield b"t" + sig.exact
    values = sig.minhash.hashvalues
    for band, (start, end) in enumerate(settings.bands):
        yield b"b%d:" % band + hashlib.blake2b(values[start:end].tobytes(), digest_size=12).digest()


def bucket_entries(sig: Signature, settings: Settings) -> Iterator[tuple[str, bytes]]:
    """(sort key, text) per bucket the record falls in, for a sorted run
    (shards.Spiller): a bucket's entries sort together, under its hex digest."""
    text = json.dumps({"key": list(sig.key), "exact": sig.exact.hex(), "scheme": sig.minhash.scheme,
                       "dtype": sig.minhash.hashvalues.dtype.str,
                       "minhash": base64.b64encode(sig.minhash.hashvalues.tobytes()).decode("ascii")}).encode()
    for bucket in buckets(sig, settings):
        yield bucket.hex() + "|" + json.dumps(list(sig.key)), text


def bucket_of(entry_key: str) -> str:
    return entry_key.split("|", 1)[0]


def signature_from_text(text: bytes) -> Signature:
    """A signature as bucket_entries wrote it."""
    import numpy as np
    from datasketch import LeanMinHash

    found = json.loads(text)
    values = np.frombuffer(base64.b64decode(found["minhash"]), dtype=np.dtype(found["dtype"]))
    key = found["key"]
    return Signature((key[0], key[1], key[2]), bytes.fromhex(found["exact"]),
                     LeanMinHash(seed=_MINHASH_SEED, hashvalues=values, scheme=found["scheme"]))


def links_in(bucket: Iterable[Signature], settings: Settings) -> Iterator[Link]:
    """For each record of a bucket that copies an earlier one there, the link to
    the earliest such."""
    ordered = sorted(bucket, key=lambda sig: sig.key)
    for at, sig in enumerate(ordered):
        for earlier in ordered[:at]:
            link = _link(sig, earlier, settings)
            if link is not None:
                yield link
                break


def _link(sig: Signature, earlier: Signature, settings: Settings) -> Link | None:
    if sig.exact == earlier.exact:
        return Link(sig.key, earlier.key, "exact", 1.0)
    jaccard = float(sig.minhash.jaccard(earlier.minhash))
    return Link(sig.key, earlier.key, "near", jaccard) if jaccard >= settings.threshold else None


def earliest(links: Iterable[Link]) -> Link:
    """Of one record's links (from its buckets), the one to its earliest copy."""
    return min(links, key=lambda link: (link.of, link.match != "exact"))


def kept_for(link: Link, dropped: dict[tuple, Link]) -> tuple[str, str, int]:
    """The record kept in place of `link.dropped`: follow the links back to one
    that copies nothing earlier (keys strictly decrease, so this ends)."""
    key = link.of
    while key in dropped:
        key = dropped[key].of
    return key


def decide(signatures: Iterable[Signature], settings: Settings) -> dict[tuple, Link]:
    """Every dropped record's link to its earliest copy, by the dropped record's key
    (the local stage's whole-corpus pass; Beam groups the same buckets)."""
    grouped: dict[bytes, list[Signature]] = {}
    for sig in signatures:
        for bucket in buckets(sig, settings):
            grouped.setdefault(bucket, []).append(sig)
    found: dict[tuple, list[Link]] = {}
    for members in grouped.values():
        if len(members) > 1:
            for link in links_in(members, settings):
                found.setdefault(link.dropped, []).append(link)
    return {key: earliest(links) for key, links in found.items()}


def reason(link: Link, kept: tuple[str, str, int], settings: Settings) -> str:
    what = ("the same program, names and layout aside" if link.match == "exact" else
            f"near duplicate: Jaccard {link.jaccard:.2f} over {settings.shingle}-token shingles "
            f"(a MinHash estimate; threshold {settings.threshold})")
    text = f"duplicate of {link.of[0]}: {what}"
    if kept != link.of:
        text += f"; that record is itself a copy, {kept[0]} is kept"
    return text


def error_fields(link: Link, kept: tuple[str, str, int]) -> dict:
    """What a dropped record's error row carries besides its reason: ids, not
    lines (a stage's lines are its own input's, which differ between engines)."""
    return {"duplicate_of": link.of[0], "kept_id": kept[0], "match": link.match,
            "jaccard": round(link.jaccard, 4)}
