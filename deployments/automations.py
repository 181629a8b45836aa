"""The Prefect automation of emailsync, kept as code and defined once: a failed or crashed `email-sync`
flow run notifies the operator.

`install_automations()` creates it, or brings an existing one of the same name back to this definition
(so editing it in the UI lasts only until the next install). It is called by `emailsync serve` and by
the deploy path (`emailsync automations install`, run by `make deploy` after `prefect deploy --all`).

The action: with `EMAILSYNC_ALERT_WEBHOOK_URL` set, a notification through a Custom Webhook block
(`emailsync-failure-alert`, saved by the install) that POSTs `{"text", "title"}` (Slack-compatible):
which run, which user, trigger and mode (its tags), its state message and its link. Without one, the
automation still fires and its `prefect.automation.triggered` / `action.executed` events show in the
Prefect UI's event feed, but nobody is notified.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from uuid import UUID

from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.events.actions import DoNothing, SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

from emailsync.config import get_settings
from emailsync.deployment_specs import EMAIL_SYNC

logger = logging.getLogger("emailsync.automations")

FAILED_SYNC_AUTOMATION = "emailsync: email-sync run failed or crashed"
ALERT_BLOCK_NAME = "emailsync-failure-alert"
FAILED_RUN_EVENTS = frozenset({"prefect.flow-run.Failed", "prefect.flow-run.Crashed"})

SUBJECT = "emailsync: flow run {{ flow_run.name }} {{ flow_run.state.name | lower }}"
BODY = (
    "Flow run {{ flow_run.name }} of {{ flow.name }} entered {{ flow_run.state.name }}: "
    "{{ flow_run.state.message }}\n"
    "Tags: {{ flow_run.tags | join(', ') }}\n"
    "Parameters: {{ flow_run.parameters }}\n"
    "{{ flow_run | ui_url }}"
)


def failed_sync_automation(alert_block_id: UUID | None) -> AutomationCore:
    """The automation: any failed or crashed run of the `email-sync` flow, each one on its own."""
    action = (
        SendNotification(block_document_id=alert_block_id, subject=SUBJECT, body=BODY)
        if alert_block_id is not None
        else DoNothing()
    )
    return AutomationCore(
        name=FAILED_SYNC_AUTOMATION,
        description=(
            f"Notifies the operator when a run of the {EMAIL_SYNC.flow_name} flow fails or crashes "
            "(defined in deployments/automations.py; `emailsync automations install` resets it)."
        ),
        enabled=True,
        trigger=EventTrigger(
            expect=set(FAILED_RUN_EVENTS),
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": EMAIL_SYNC.flow_name},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[action],
    )


def save_alert_block(webhook_url: str) -> UUID:
    """The Custom Webhook block the notification goes through (created or overwritten)."""
    block = CustomWebhookNotificationBlock(
        name=ALERT_BLOCK_NAME,
        url=webhook_url,
        method="POST",
        json_data={"text": "{{subject}}\n{{body}}", "title": "{{subject}}"},
    )
    return block.save(ALERT_BLOCK_NAME, overwrite=True)


def install_automations(webhook_url: str | None = None) -> UUID:
    """Create or update the automation on the Prefect API of this process; returns its id.

    `webhook_url` defaults to `EMAILSYNC_ALERT_WEBHOOK_URL`."""
    url = webhook_url if webhook_url is not None else get_settings().alert_webhook_url
    alert_block_id = save_alert_block(url) if url else None
    automation = failed_sync_automation(alert_block_id)
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(FAILED_SYNC_AUTOMATION)
        if existing:
            first, *duplicates = existing
            client.update_automation(first.id, automation)
            for duplicate in duplicates:  # e.g. two installs that raced: one definition only
                client.delete_automation(duplicate.id)
            automation_id = first.id
        else:
            automation_id = client.create_automation(automation)
    logger.info(
        "automation %r installed (%s)",
        FAILED_SYNC_AUTOMATION,
        "webhook notification" if url else "no EMAILSYNC_ALERT_WEBHOOK_URL: fires without notifying",
    )
    return automation_id
