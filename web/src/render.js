// Renders the merged syncs as one card with a progress bar per sync. Cards are keyed by syncId and
// updated in place, so a bar animates from its old width instead of being redrawn. Only textContent
// is used: error texts and ids come from the database and must never be parsed as HTML.
import {
  STATUS_LABELS,
  compareSyncs,
  emailsText,
  percentOf,
  statusOf,
  timeText,
  triggerText,
  windowText,
} from "./format.js";

function element(tag, className, attributes = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function fact(list, label, testId) {
  const wrapper = element("div", "fact");
  const term = element("dt");
  term.textContent = label;
  const value = element("dd", null, { "data-testid": testId });
  wrapper.append(term, value);
  list.append(wrapper);
  return value;
}

function createCard() {
  const card = element("article", "sync", { "data-testid": "sync" });
  const head = element("div", "sync-head");
  const who = element("div", "who");
  const user = element("span", "user", { "data-testid": "sync-user" });
  const provider = element("span", "provider", { "data-testid": "sync-provider" });
  who.append(user, provider);
  const badge = element("span", "badge", { "data-testid": "sync-status" });
  head.append(who, badge);

  const meter = element("div", "meter");
  const bar = element("div", "bar", { role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" });
  const fill = element("div", "fill");
  bar.append(fill);
  const percent = element("span", "percent", { "data-testid": "sync-percent" });
  meter.append(bar, percent);

  const facts = element("dl", "facts");
  const parts = {
    user,
    provider,
    badge,
    bar,
    fill,
    percent,
    emails: fact(facts, "Emails", "sync-emails"),
    window: fact(facts, "Current window", "sync-window"),
    trigger: fact(facts, "Trigger", "sync-trigger"),
    updated: fact(facts, "Updated", "sync-updated"),
    error: element("p", "error", { role: "alert", "data-testid": "sync-error" }),
  };
  card.append(head, meter, facts, parts.error);
  return { card, parts };
}

function updateCard({ card, parts }, sync) {
  const status = statusOf(sync);
  const percent = percentOf(sync);
  const details = sync.details ?? {};
  card.dataset.syncId = sync.syncId;
  card.dataset.status = status;
  card.className = `sync status-${status}`;
  parts.user.textContent = sync.appUserId ?? "—";
  parts.provider.textContent = `Gmail · ${sync.providerUserId ?? "—"}`;
  parts.badge.textContent = STATUS_LABELS[status];
  parts.bar.setAttribute("aria-valuenow", String(percent));
  parts.bar.setAttribute("aria-label", `Sync progress ${percent}%`);
  parts.fill.style.width = `${percent}%`;
  parts.percent.textContent = `${percent}%`;
  parts.emails.textContent = emailsText(details);
  parts.window.textContent = windowText(details.currentWindow);
  parts.trigger.textContent = triggerText(details);
  parts.updated.textContent = timeText(sync.updatedAt);
  const failed = status === "failed";
  parts.error.hidden = !failed;
  parts.error.textContent = failed ? sync.error || "The sync failed for an unknown reason." : "";
}

/** Returns a `render(state)` that keeps `container` and `noticeBox` in step with a SubscriptionState. */
export function createRenderer(container, noticeBox) {
  const cards = new Map();
  const empty = element("p", "empty", { "data-testid": "empty" });

  return function render({ syncs, problems, loading }) {
    noticeBox.replaceChildren(
      ...problems.map((text) => {
        const notice = element("p", "notice", { role: "status", "data-testid": "notice" });
        notice.textContent = text;
        return notice;
      }),
    );

    for (const [syncId, entry] of cards) {
      if (!syncs.has(syncId)) {
        entry.card.remove();
        cards.delete(syncId);
      }
    }
    const ordered = [...syncs.values()].sort(compareSyncs);
    for (const sync of ordered) {
      let entry = cards.get(sync.syncId);
      if (!entry) {
        entry = createCard();
        cards.set(sync.syncId, entry);
      }
      updateCard(entry, sync);
    }
    empty.textContent = loading ? "Loading…" : "No syncs";
    const wanted = ordered.length ? ordered.map((s) => cards.get(s.syncId).card) : [empty];
    const current = [...container.children];
    // Moving a node restarts its styles (no bar animation), so only touch the DOM when the order changed.
    if (wanted.length !== current.length || wanted.some((node, index) => node !== current[index])) {
      container.replaceChildren(...wanted);
    }
    container.setAttribute("aria-busy", String(loading));
  };
}
