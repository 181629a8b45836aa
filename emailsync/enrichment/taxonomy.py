"""The tag vocabulary shared by every enrichment backend.

Each tag has a short description. The local backend embeds the descriptions once and tags a message
with the nearest ones (zero-shot); the OpenAI backend puts the same descriptions in its prompt and
constrains its answer to these names with a JSON-schema enum. Descriptions are written as the kind of
text such an email contains, because that is what sits nearest to real messages in embedding space.
"""

from __future__ import annotations

import re

TAG_DESCRIPTIONS: dict[str, str] = {
    "finance": "bank account statement, balance, money transfer, credit card, investment, stocks, loan, "
    "mortgage, taxes",
    "bills": "bill or invoice due, payment reminder, utility bill, electricity, water, phone or internet "
    "bill, amount due",
    "receipts": "receipt, order confirmation, payment received, thank you for your purchase, order number, "
    "total charged",
    "shopping": "online shopping order, product shipped, delivery tracking, package, store, cart",
    "promotions": "sale, discount, special offer, coupon, limited time deal, free trial, buy now, save money",
    "travel": "flight booking, hotel reservation, itinerary, boarding pass, trip, car rental, vacation",
    "school": "school, teacher, class, homework, students, parents meeting, university course, exam grades",
    "health": "doctor appointment, medical results, prescription, pharmacy, hospital, health insurance, "
    "dentist",
    "work": "work project, meeting with colleagues, deadline, report, manager, job, office, business",
    "family": "family news, kids, parents, relatives, birthday, dinner at home, children",
    "personal": "personal note from a friend, catching up, how are you, thanks for your help, see you soon",
    "social": "social network notification, friend request, new follower, someone commented on your post",
    "events": "event invitation, conference, meetup, webinar, party, concert tickets, calendar invite, RSVP",
    "newsletter": "newsletter, mailing list digest, weekly update, subscribe or unsubscribe, announcements",
    "news": "news article, politics, world events, technology industry news, press release, opinion",
    "security": "password reset, security alert, new sign-in, verification code, account locked, "
    "suspicious activity, virus, privacy",
    "software-development": "software bug report, source code, patch, compile error, linux, python, "
    "programming, open source release, version control",
    "spam": "make money fast, you have won a prize, viagra, casino, adult content, get rich, act now, "
    "lottery winner, urgent business proposal to transfer millions of dollars abroad",
    "home": "apartment lease and rent, landlord, home repair, plumber, real estate, moving house, garden, "
    "furniture, household chores",
}

TAXONOMY: list[str] = list(TAG_DESCRIPTIONS)

# Cheap rules for signals an embedding cannot see reliably: a bulk-mail footer means newsletter.
_RULE_SCAN_CHARS = 8000
_NEWSLETTER_PATTERN = re.compile(
    r"\bunsubscribe\b|\bmanage (?:your )?(?:subscription|email preferences)\b|\bmailing list\b|/listinfo/",
    re.IGNORECASE,
)


def rule_tags(subject: str, body_text: str) -> list[str]:
    """Tags implied by unmistakable markers in the text, in TAXONOMY order."""
    if len(body_text) > 2 * _RULE_SCAN_CHARS:
        # Footers sit at the end and headlines at the start; the middle of a huge body says nothing.
        body_text = f"{body_text[:_RULE_SCAN_CHARS]}\n{body_text[-_RULE_SCAN_CHARS:]}"
    tags: list[str] = []
    if _NEWSLETTER_PATTERN.search(body_text) or _NEWSLETTER_PATTERN.search(subject):
        tags.append("newsletter")
    return tags
