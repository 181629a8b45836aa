"""Plain-text preparation shared by the backends: body cleaning, embedding text, extractive summaries.

Everything here is pure Python with precompiled regexes, because it runs for every message on the
enrichment hot path (≥ 50 messages/s on 2 cores, next to the embedding model).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from emailsync.enrichment.base import SUMMARY_MAX_CHARS, EnrichmentInput

# Only the start of a body matters for a summary or an embedding; huge bodies are cut before any regex.
BODY_SCAN_CHARS = 8000
MAX_CANDIDATE_SENTENCES = 40

# Everything after these lines is a signature, a list footer or an Outlook-style quoted original.
_END_OF_MESSAGE = re.compile(
    r"^(?:--|-- |_{20,}|-{3,}\s*original message\s*-{3,})$",
    re.IGNORECASE,
)
# Attribution lines introduce quoted text (dropped line by line); the reply may follow, so go on.
_ATTRIBUTION = re.compile(
    r"^(?:on .{0,200}|.{0,100}) (?:wrote|writes|said):$|^quoting .{0,100}:$", re.IGNORECASE
)
_BOILERPLATE = re.compile(
    r"unsubscribe|mailing list|listinfo|click here|view (?:this|it) (?:email|message|online|in your browser)"
    r"|privacy policy|all rights reserved|sent from my (?:iphone|ipad|android)|this (?:e-?mail|message) "
    r"(?:and any attachments |was sent|is confidential)|you are receiving this|to stop receiving",
    re.IGNORECASE,
)
_URL_ONLY = re.compile(r"^[<(\[]*(?:https?://|www\.|mailto:)\S*[>)\]]*$", re.IGNORECASE)
_URL = re.compile(r"<?(?:https?://|www\.)\S+>?", re.IGNORECASE)
# A sentence ends at . ! ? before a capital, digit or non-Latin letter (lower-case ASCII continues it).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?(?![a-z])[^\W_])|(?<=[。！？])\s*")
# A "sentence" ending in one of these was split after an abbreviation: glue it to the next one.
_ABBREVIATION_END = re.compile(r"\b(?:Dr|Mr|Mrs|Ms|Prof|St|Jr|Sr|vs|etc|Inc|Ltd|Co|No|approx|e\.g|i\.e)\.$")
_WHITESPACE = re.compile(r"\s+")
_LETTER = re.compile(r"[^\W\d_]")  # any script's letters, not just ASCII
_WORD = re.compile(r"[^\W\d_][\w'-]{2,}")
_GREETING = re.compile(
    r"^(?:hi|hello|hey|dear|greetings|thanks|thank you|regards|best|cheers|sincerely|yours)\b",
    re.IGNORECASE,
)

_STOPWORDS = frozenset(
    """
    about above after again against all also and any are aren't because been before being below between both
    but can cannot could couldn't did didn't does doesn't doing don't down during each few for from further
    had hadn't has hasn't have haven't having her here hers herself him himself his how i'm i've if into
    isn't it's its itself just let's more most mustn't myself nor not now off once only other ought our ours
    ourselves out over own same she should shouldn't some such than that that's the their theirs them
    themselves then there there's these they they're this those through too under until very was wasn't
    were weren't what what's when where which while who whom why will with won't would wouldn't you you're
    your yours yourself yourselves get got one two may might much many like even well back still way use
    used using want make made see say said also per via etc
    """.split()  # noqa: SIM905 - a word list reads better as text
)


def clean_body(body_text: str) -> list[str]:
    """The new content of a body as paragraphs: no quoted lines, signature, footers or bare URLs."""
    paragraphs: list[str] = []
    current: list[str] = []
    for raw_line in body_text[:BODY_SCAN_CHARS].splitlines():
        line = raw_line.strip()
        if _END_OF_MESSAGE.match(raw_line.rstrip("\r")) or _END_OF_MESSAGE.match(line):
            break
        keep = (
            line
            and not line.startswith((">", "|"))
            and not _URL_ONLY.match(line)
            and not _ATTRIBUTION.match(line)
            and not _BOILERPLATE.search(line)
            and len(_LETTER.findall(line)) >= 0.4 * len(line)
        )
        if keep:
            current.append(line)
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return paragraphs


def truncate(text: str, max_chars: int) -> str:
    """`text` cut at a word boundary to at most `max_chars` characters, with an ellipsis when cut."""
    text = _WHITESPACE.sub(" ", text).strip()
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    if " " in cut[max_chars // 2 :]:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip(" ,;:-") + "…"


def embedding_text(
    subject: str, sender: str, paragraphs: Sequence[str], body_text: str, max_chars: int
) -> str:
    """Subject, sender and the start of the new content: what a message is about, in few tokens.

    When cleaning left nothing (a body that is all footer or quote), the raw body start is used:
    boilerplate still says more about a message than no body at all.
    """
    parts = [subject.strip(), f"From: {sender.strip()}" if sender.strip() else ""]
    head = " ".join(part for part in parts if part)
    body = " ".join(paragraphs) if paragraphs else body_text[: max_chars * 2]
    body = _URL.sub(" ", body)
    text = _WHITESPACE.sub(" ", f"{head}. {body}" if head else body).strip()
    return text[:max_chars] or "(empty message)"


def bodies_and_embedding_texts(
    items: Sequence[EnrichmentInput], max_chars: int
) -> tuple[list[list[str]], list[str]]:
    """Per item: its cleaned body paragraphs, and the `embedding_text` (at most `max_chars`) built on them."""
    bodies = [clean_body(item.body_text) for item in items]
    texts = [
        embedding_text(item.subject, item.sender, paragraphs, item.body_text, max_chars)
        for item, paragraphs in zip(items, bodies, strict=True)
    ]
    return bodies, texts


def prompt_body(body_text: str, max_chars: int) -> str:
    """The body for a language model: quoted lines dropped, blank runs squeezed, cut to `max_chars`."""
    lines = [line.rstrip() for line in body_text[: max_chars * 3].splitlines() if not line.startswith(">")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return text[:max_chars]


def split_sentences(paragraphs: Sequence[str]) -> list[str]:
    """Candidate summary sentences in reading order (greetings and fragments left out)."""
    sentences: list[str] = []
    seen: set[str] = set()  # newsletters repeat their headline in the body: a summary says it once
    for paragraph in paragraphs:
        pieces: list[str] = []
        for piece in _SENTENCE_END.split(_URL.sub(" ", paragraph)):
            if pieces and _ABBREVIATION_END.search(pieces[-1]):
                pieces[-1] = f"{pieces[-1]} {piece}"
            else:
                pieces.append(piece)
        for piece in pieces:
            sentence = _WHITESPACE.sub(" ", piece).strip(" -*•\t")
            words = sentence.count(" ") + 1
            # Word counts mean nothing in scripts written without spaces (Chinese, Japanese).
            if len(sentence) < 20 or (words < 4 and sentence.isascii()):
                continue
            if _GREETING.match(sentence) and len(sentence) < 60:
                continue
            if sentence.casefold() in seen:
                continue
            seen.add(sentence.casefold())
            sentences.append(sentence)
            if len(sentences) >= MAX_CANDIDATE_SENTENCES:
                return sentences
    return sentences


def _terms(text: str) -> list[str]:
    return [word for word in _WORD.findall(text.lower()) if word not in _STOPWORDS]


def extractive_summaries(subjects: Sequence[str], bodies: Sequence[Sequence[str]]) -> list[str]:
    """One summary (≤ SUMMARY_MAX_CHARS) per message: its 1-2 most central sentences, else its subject.

    Centrality is the cosine between a sentence's TF-IDF vector and the whole message's, with the
    document frequencies taken over the batch, so words every message shares (list names, greetings)
    weigh little. Early sentences and sentences sharing words with the subject get a small bonus.
    """
    sentence_lists = [split_sentences(paragraphs) for paragraphs in bodies]
    term_lists = [[_terms(sentence) for sentence in sentences] for sentences in sentence_lists]
    document_frequency: Counter[str] = Counter()
    for terms_per_sentence in term_lists:
        document_frequency.update({term for terms in terms_per_sentence for term in terms})
    documents = max(len(term_lists), 1)

    def idf(term: str) -> float:
        return math.log((documents + 1) / (document_frequency[term] + 1)) + 1.0

    summaries: list[str] = []
    for subject, sentences, terms_per_sentence in zip(subjects, sentence_lists, term_lists, strict=True):
        fallback = truncate(subject, SUMMARY_MAX_CHARS) or "(no subject)"
        if not sentences:
            summaries.append(fallback)
            continue
        subject_terms = set(_terms(subject))
        message_counts: Counter[str] = Counter(term for terms in terms_per_sentence for term in terms)
        for term in subject_terms:
            message_counts[term] += 2
        message_vector = {term: count * idf(term) for term, count in message_counts.items()}
        message_norm = math.sqrt(sum(weight * weight for weight in message_vector.values())) or 1.0

        scores: list[float] = []
        for position, terms in enumerate(terms_per_sentence):
            if not terms:
                scores.append(0.0)
                continue
            counts = Counter(terms)
            vector = {term: count * idf(term) for term, count in counts.items()}
            norm = math.sqrt(sum(weight * weight for weight in vector.values()))
            centrality = sum(weight * message_vector[term] for term, weight in vector.items()) / (
                norm * message_norm
            )
            subject_overlap = (
                len(subject_terms & counts.keys()) / len(subject_terms) if subject_terms else 0.0
            )
            scores.append(centrality * (1.0 + 0.5 / (1 + position)) + 0.2 * subject_overlap)

        ranked = sorted(range(len(sentences)), key=lambda index: scores[index], reverse=True)
        chosen = [ranked[0]]
        if len(sentences[ranked[0]]) < SUMMARY_MAX_CHARS // 2:
            for index in ranked[1:3]:
                fits = len(sentences[ranked[0]]) + 1 + len(sentences[index]) <= SUMMARY_MAX_CHARS
                if fits and scores[index] >= 0.5 * scores[ranked[0]]:
                    chosen.append(index)
                    break
        summary = " ".join(sentences[index] for index in sorted(chosen))
        summaries.append(truncate(summary, SUMMARY_MAX_CHARS) or fallback)
    return summaries
