"""Gmail labels of one user of the local Gmail server: the system labels, user labels, and the names
Google Takeout writes in an mbox's `X-Gmail-Labels` header."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypedDict

INBOX, UNREAD, STARRED, IMPORTANT = "INBOX", "UNREAD", "STARRED", "IMPORTANT"
SENT, DRAFT, SPAM, TRASH, CHAT = "SENT", "DRAFT", "SPAM", "TRASH", "CHAT"
CATEGORY_LABELS = (
    "CATEGORY_PERSONAL",
    "CATEGORY_SOCIAL",
    "CATEGORY_PROMOTIONS",
    "CATEGORY_UPDATES",
    "CATEGORY_FORUMS",
)
SYSTEM_LABEL_IDS: tuple[str, ...] = (
    CHAT,
    SENT,
    INBOX,
    IMPORTANT,
    TRASH,
    DRAFT,
    SPAM,
    *CATEGORY_LABELS,
    STARRED,
    UNREAD,
)
# Labels a client can't put on or take off a message with modify (Gmail answers 400).
UNMODIFIABLE_LABEL_IDS = frozenset({DRAFT, CHAT})
# Takeout's names for system labels ("Opened" and "Archived" mean: no UNREAD / no INBOX label).
_TAKEOUT_SYSTEM_NAMES = {
    "inbox": INBOX,
    "unread": UNREAD,
    "starred": STARRED,
    "important": IMPORTANT,
    "sent": SENT,
    "sent mail": SENT,
    "draft": DRAFT,
    "drafts": DRAFT,
    "spam": SPAM,
    "trash": TRASH,
    "chat": CHAT,
    "chats": CHAT,
    **{label.replace("_", " ").lower(): label for label in CATEGORY_LABELS},
}
_TAKEOUT_STATE_NAMES = frozenset({"opened", "archived"})
# Gmail's own visibility settings for its system labels (what labels.list shows).
_SYSTEM_VISIBILITY: dict[str, tuple[str | None, str | None]] = {
    CHAT: ("hide", "labelHide"),
    IMPORTANT: ("hide", "labelShow"),
    SPAM: ("hide", "labelHide"),
    TRASH: ("hide", "labelHide"),
    DRAFT: ("hide", "labelShow"),
    STARRED: ("hide", "labelShow"),
    UNREAD: ("hide", "labelShow"),
    SENT: ("hide", "labelShow"),
    INBOX: ("hide", "labelShow"),
    **{label: ("hide", "labelHide") for label in CATEGORY_LABELS},
}
_MESSAGE_LIST_VISIBILITY = ("show", "hide")
_LABEL_LIST_VISIBILITY = ("labelShow", "labelShowIfUnread", "labelHide")


class LabelConflict(Exception):
    """labels.create with a name that exists (Gmail: 409)."""


@dataclass(frozen=True, slots=True)
class Label:
    id: str
    name: str
    type: str  # "system" | "user"
    message_list_visibility: str | None = None
    label_list_visibility: str | None = None
    color: dict[str, str] | None = None

    def resource(self) -> dict[str, Any]:
        """The Label resource as labels.list / labels.create answer it."""
        resource: dict[str, Any] = {"id": self.id, "name": self.name}
        if self.message_list_visibility:
            resource["messageListVisibility"] = self.message_list_visibility
        if self.label_list_visibility:
            resource["labelListVisibility"] = self.label_list_visibility
        if self.color:
            resource["color"] = dict(self.color)
        resource["type"] = self.type
        return resource


def apply_label_change(
    current: tuple[str, ...], add: Iterable[str], remove: Iterable[str]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(new labels, labels added, labels removed) as Gmail applies a change: SPAM takes a message out of
    INBOX and TRASH, TRASH takes it out of SPAM; an added label that is there already is no change."""
    add = tuple(dict.fromkeys(add))
    implied: set[str] = set()
    if SPAM in add:
        implied |= {INBOX, TRASH}
    if TRASH in add:
        implied.add(SPAM)
    dropped = (set(remove) | implied) - set(add)
    labels = [label for label in current if label not in dropped]
    labels.extend(label for label in add if label not in labels)
    added = tuple(label for label in labels if label not in current)
    removed = tuple(label for label in current if label not in labels)
    return tuple(labels), added, removed


def takeout_label_names(header_value: str) -> list[str]:
    """Label names of a Takeout `X-Gmail-Labels` value: comma separated, quoted when a name has one."""
    row = next(csv.reader([header_value], skipinitialspace=True), [])
    return [name.strip() for name in row if name.strip()]


class Labels:
    """One user's labels: every system label plus the user's own (ids `Label_1`, `Label_2`, ...).
    Not thread-safe: the owning mailbox locks."""

    def __init__(self) -> None:
        self._by_id: dict[str, Label] = {}
        for label_id in SYSTEM_LABEL_IDS:
            message_visibility, list_visibility = _SYSTEM_VISIBILITY.get(label_id, (None, None))
            self._by_id[label_id] = Label(label_id, label_id, "system", message_visibility, list_visibility)
        self._next_user_label = 1

    def copy(self) -> Labels:
        clone = Labels()
        clone._by_id = dict(self._by_id)
        clone._next_user_label = self._next_user_label
        return clone

    def __contains__(self, label_id: object) -> bool:
        return label_id in self._by_id

    def get(self, label_id: str) -> Label | None:
        return self._by_id.get(label_id)

    def all(self) -> list[Label]:
        return list(self._by_id.values())

    def check(self, label_ids: Iterable[str], *, modifiable: bool = False) -> None:
        """ValueError (Gmail: 400 "Invalid label") for an unknown label, or one modify can't change."""
        for label_id in label_ids:
            if label_id not in self._by_id or (modifiable and label_id in UNMODIFIABLE_LABEL_IDS):
                raise ValueError(f"Invalid label: {label_id}")

    def find_by_name(self, name: str) -> Label | None:
        """The label called `name` (case-insensitive), system labels by their id too."""
        wanted = name.strip().lower()
        for label in self._by_id.values():
            if label.name.lower() == wanted:
                return label
        return None

    def create(
        self,
        name: str,
        message_list_visibility: str | None = "show",
        label_list_visibility: str | None = "labelShow",
        color: dict[str, str] | None = None,
    ) -> Label:
        """A new user label; ValueError for a bad name/visibility, LabelConflict for a taken name."""
        name = (name or "").strip()
        if not name:
            raise ValueError("Invalid label name")
        if message_list_visibility is not None and message_list_visibility not in _MESSAGE_LIST_VISIBILITY:
            raise ValueError(f"Invalid messageListVisibility: {message_list_visibility}")
        if label_list_visibility is not None and label_list_visibility not in _LABEL_LIST_VISIBILITY:
            raise ValueError(f"Invalid labelListVisibility: {label_list_visibility}")
        if self.find_by_name(name) is not None or name.upper() in SYSTEM_LABEL_IDS:
            raise LabelConflict(name)
        label = Label(
            f"Label_{self._next_user_label}",
            name,
            "user",
            message_list_visibility,
            label_list_visibility,
            dict(color) if color else None,
        )
        self._next_user_label += 1
        self._by_id[label.id] = label
        return label

    def from_takeout(self, header_value: str) -> tuple[str, ...]:
        """Label ids for a Takeout `X-Gmail-Labels` value; user labels are created on first sight."""
        label_ids: list[str] = []
        for name in takeout_label_names(header_value):
            lowered = name.lower()
            if lowered in _TAKEOUT_STATE_NAMES:
                continue
            label_id = _TAKEOUT_SYSTEM_NAMES.get(lowered)
            if label_id is None:
                existing = self.find_by_name(name)
                label_id = existing.id if existing is not None else self.create(name).id
            if label_id not in label_ids:
                label_ids.append(label_id)
        return tuple(label_ids)


class LabelOptions(TypedDict, total=False):
    """What `Labels.create` takes besides the name, for callers that pass them on."""

    message_list_visibility: str | None
    label_list_visibility: str | None
    color: dict[str, str] | None


_SEARCH_ALIASES = {"drafts": DRAFT, "chats": CHAT, "sent mail": SENT}


def search_label_id(labels: Labels, term: str) -> str | None:
    """The label a `q` term (`in:`/`label:`/`category:` operand, lower-case) names, or None. Like Gmail,
    spaces and "/" in a user label's name may be written as "-"."""
    wanted = term.strip().lower()
    if wanted in _SEARCH_ALIASES:
        return _SEARCH_ALIASES[wanted]
    if wanted.upper() in SYSTEM_LABEL_IDS:
        return wanted.upper()
    for label in labels.all():
        name = label.name.lower()
        if wanted in (name, name.replace(" ", "-").replace("/", "-"), label.id.lower()):
            return label.id
    return None
