// Renders the merged syncs as one card with a progress bar per sync. Cards are keyed by syncId and
// updated in place, so a bar animates from its old width instead of being redrawn. Only textContent
// is used: error texts and ids come from the database and must never be parsed as HTML.
import {
  STATUS_LABELS,
  compareSyncs,
  groupProviderSyncs,
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
    note: element("p", "note", { "data-testid": "sync-note" }),
    meter,
  };
  card.append(head, meter, facts, parts.error, parts.note);
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
  // A skipped trigger did no work of its own: no bar (it is not a finished 100% sync), a sentence instead.
  const skipped = status === "skipped";
  parts.meter.hidden = skipped;
  parts.note.hidden = !skipped;
  const active = details.activeSyncId ?? details.active_sync_id;
  parts.note.textContent = skipped
    ? `Already syncing: this ${triggerText(details).toLowerCase()} request was skipped because ${
        active ? `sync ${active}` : "another sync"
      } of this mailbox is still running.`
    : "";
}

/** Replaces `parent`'s children with `wanted` only when they differ (moving a node restarts its styles). */
function setChildren(parent, wanted) {
  const current = [...parent.children];
  if (wanted.length !== current.length || wanted.some((node, index) => node !== current[index])) {
    parent.replaceChildren(...wanted);
  }
}

function createGroup(providerUserId) {
  const group = element("section", "provider-group", {
    "data-testid": "provider-group",
    "data-provider-user-id": providerUserId,
  });
  const title = element("h2", null, { "data-testid": "provider-title" });
  const reauth = element("div", "reauth", { role: "alert", "data-testid": "reauth" });
  const reauthText = element("span");
  const reauthButton = element("button", null, { type: "button", "data-testid": "reconnect" });
  reauthButton.textContent = "Reconnect Gmail";
  reauth.append(reauthText, reauthButton);
  const current = element("div", "current");
  const earlier = element("details", "earlier", { "data-testid": "earlier-syncs" });
  const summary = element("summary");
  const earlierList = element("div");
  earlier.append(summary, earlierList);
  return { group, title, reauth, reauthText, current, earlier, summary, earlierList };
}

/** Returns a `render(state)` that keeps `container` and `noticeBox` in step with a SubscriptionState. */
export function createRenderer(container, noticeBox) {
  const cards = new Map();
  const empty = element("p", "empty", { "data-testid": "empty" });

  const hint = element("p", "hint", { "data-testid": "no-gmail" });
  hint.textContent = "No Gmail account is connected yet: connect Gmail in the app and your sync shows up here.";
  const groups = new Map();

  return function render({ syncs, problems, loading, providerUsers = new Map(), providerUsersLoaded = false }) {
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
    // One group per provider user (connected Gmail account): the latest sync, skipped triggers since,
    // earlier syncs folded away.
    const byProvider = new Map();
    for (const [id, user] of providerUsers) if (user?.services?.gmail?.needsReauth) byProvider.set(id, []);
    for (const sync of syncs.values()) {
      const id = sync.providerUserId ?? "—";
      if (!byProvider.has(id)) byProvider.set(id, []);
      byProvider.get(id).push(sync);
    }
    const grouped = [...byProvider].map(([id, list]) => ({ id, ...groupProviderSyncs(list) }));
    grouped.sort((a, b) => {
      if (!a.latest || !b.latest) return a.latest ? 1 : b.latest ? -1 : 0; // reconnect-only groups first
      return compareSyncs(a.latest, b.latest);
    });
    const cardFor = (sync) => {
      let entry = cards.get(sync.syncId);
      if (!entry) {
        entry = createCard();
        cards.set(sync.syncId, entry);
      }
      updateCard(entry, sync);
      return entry.card;
    };
    for (const id of groups.keys()) if (!byProvider.has(id)) groups.delete(id);
    const wantedGroups = grouped.map(({ id, latest, skippedSinceLatest, earlier }) => {
      let parts = groups.get(id);
      if (!parts) {
        parts = createGroup(id);
        groups.set(id, parts);
      }
      const user = providerUsers.get(id);
      parts.title.textContent = `Gmail · ${user?.email ?? id}`;
      const needsReauth = Boolean(user?.services?.gmail?.needsReauth);
      parts.reauth.hidden = !needsReauth;
      parts.reauthText.textContent = needsReauth
        ? `Gmail access for ${user?.email ?? id} was revoked: reconnect Gmail to resume syncing.`
        : "";
      setChildren(parts.current, [latest, ...skippedSinceLatest].filter(Boolean).map(cardFor));
      setChildren(parts.earlierList, earlier.map(cardFor));
      parts.summary.textContent = `Earlier syncs (${earlier.length})`;
      const children = [parts.title, parts.reauth, parts.current];
      if (earlier.length) children.push(parts.earlier);
      setChildren(parts.group, children);
      return parts.group;
    });
    empty.textContent = loading ? "Loading…" : "No syncs";
    const wanted = wantedGroups.length ? wantedGroups : [empty];
    const hasGmail = [...providerUsers.values()].some((user) => user?.services?.gmail?.active);
    if (!wantedGroups.length && !loading && providerUsersLoaded && !hasGmail) wanted.push(hint);
    setChildren(container, wanted);
    container.setAttribute("aria-busy", String(loading));
  };
}
