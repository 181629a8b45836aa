"""Local tagging: learned spam and newsletter heads on a few committed examples."""

from __future__ import annotations

import pytest

from emailsync.enrichment import EnrichmentInput
from emailsync.enrichment.local import LocalEnricher

SCAM = EnrichmentInput(
    message_id="scam",
    subject="URGENT BUSINESS ASSISTANCE",
    sender="Dr. Martin Francis <martin_francis7@yahoo.fr>",
    body_text=(
        "Dear Friend,\n\nI am the manager of the audit department of a bank in Abidjan. In my department "
        "we discovered an abandoned sum of US$25,500,000 (twenty five million five hundred thousand "
        "dollars) in an account that belongs to one of our foreign customers who died in a plane crash. "
        "I need your assistance to transfer this money to your account abroad; you will receive 30% of "
        "the total sum. Reply urgently with your private telephone and fax numbers.\n"
    ),
)
PILLS = EnrichmentInput(
    message_id="pills",
    subject="Approved Online, Internet, Buy Viagra          SJHF",
    sender="pamela7046@eudoramail.com",
    body_text=(
        "Online Doctors will fill your Viagra prescription NOW!!! No appointments, no waiting rooms, "
        "discreet overnight delivery. Lowest prices guaranteed. CLICK HERE to order.\n\n"
        "To be removed from our mailing list reply with REMOVE in the subject.\n"
    ),
)
LIST_DISCUSSION = EnrichmentInput(
    message_id="list",
    subject="Re: New Sequences Window",
    sender="Robert Elz <kre@munnari.OZ.AU>",
    body_text=(
        "    Date:        Wed, 21 Aug 2002 10:54:46 -0500\n\n"
        "  | I can't reproduce this error.\n\n"
        "For me it is very repeatable... (like every time, without fail). This is the debug log of the "
        "pick happening, the sequence it creates is empty although messages match.\n\n"
        "kre\n\n"
        "_______________________________________________\n"
        "Exmh-workers mailing list\nExmh-workers@redhat.com\n"
        "https://listman.redhat.com/mailman/listinfo/exmh-workers\n"
    ),
)
NEWSLETTER = EnrichmentInput(
    message_id="newsletter",
    subject="CNET NEWS.COM: Cable companies cracking down on Wi-Fi",
    sender="CNET News.com <newsletters@cnet.example>",
    body_text=(
        "Today on CNET News.com: cable companies crack down on customers who share Wi-Fi; Intel cuts "
        "prices of its desktop chips; the week's best deals on notebooks.\n\n"
        "Read the full stories at news.com.\n\n"
        "You are receiving this newsletter because you subscribed at CNET. To unsubscribe or manage "
        "your email preferences, visit https://cnet.example/newsletters\n"
    ),
)
PERSONAL = EnrichmentInput(
    message_id="personal",
    subject="Dinner on Saturday?",
    sender="Mum <mum@family.example>",
    body_text="Hi love, are you and the kids coming for dinner on Saturday? Dad is making lasagne. x",
)


@pytest.fixture(scope="module")
def enricher() -> LocalEnricher:
    return LocalEnricher(backend="onnx").load()


def _tags(enricher: LocalEnricher, item: EnrichmentInput) -> list[str]:
    [enrichment] = enricher.enrich([item])
    return enrichment.tags


def test_advance_fee_scam_is_tagged_spam_first(enricher):
    assert _tags(enricher, SCAM)[0] == "spam"


def test_pill_offer_with_a_removal_footer_is_spam_not_newsletter(enricher):
    tags = _tags(enricher, PILLS)

    assert tags[0] == "spam"
    assert "newsletter" not in tags


def test_mailing_list_discussion_with_a_listinfo_footer_is_neither_newsletter_nor_spam(enricher):
    tags = _tags(enricher, LIST_DISCUSSION)

    assert "newsletter" not in tags
    assert "spam" not in tags


def test_publisher_newsletter_with_an_unsubscribe_footer_is_tagged_newsletter(enricher):
    tags = _tags(enricher, NEWSLETTER)

    assert "newsletter" in tags
    assert "spam" not in tags


def test_personal_note_from_family_is_neither_spam_nor_newsletter(enricher):
    tags = _tags(enricher, PERSONAL)

    assert not {"spam", "newsletter"} & set(tags)
