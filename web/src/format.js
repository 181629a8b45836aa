// Pure formatting of syncProgress fields (schema: shared/DESIGN.md) for display.

export const STATUS_LABELS = {
  pending: "Pending",
  in_progress: "In progress",
  completed: "Completed",
  failed: "Failed",
  skipped: "Already syncing",
};

const TRIGGER_LABELS = { connect: "Gmail connected", schedule: "Scheduled", manual: "Manual", push: "New mail (push)" };
const ACTIVE_STATUSES = new Set(["pending", "in_progress"]);

/** Firestore Timestamp, Date, ISO string or millis -> Date (null when absent or unreadable). */
export function toDate(value) {
  if (value == null) return null;
  if (typeof value.toDate === "function") return value.toDate();
  const date = value instanceof Date ? value : new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** A trigger that found another sync of the mailbox running (status `skipped`, `details.activeSyncId`
 * naming that sync; older documents: `completed` with `details.skipped`): never shown as a 100% sync. */
export function isSkipped(sync) {
  return sync?.status === "skipped" || sync?.details?.skipped === true;
}

export function statusOf(sync) {
  if (isSkipped(sync)) return "skipped";
  return Object.hasOwn(STATUS_LABELS, sync.status) ? sync.status : "pending";
}

export function percentOf(sync) {
  if (isSkipped(sync)) return 0;
  if (statusOf(sync) === "completed") return 100;
  const value = Math.round(Number(sync.progress) || 0);
  return Math.min(100, Math.max(0, value));
}

export function emailsText(details = {}) {
  const processed = Number(details.emailsProcessed) || 0;
  const estimate = Number(details.emailsTotalEstimate);
  const count = processed.toLocaleString("en-US");
  if (Number.isFinite(estimate) && estimate > 0) {
    return `${count} of ~${estimate.toLocaleString("en-US")} emails`;
  }
  return `${count} ${processed === 1 ? "email" : "emails"}`;
}

const DAY = { day: "numeric", month: "short" };
const dayFormat = new Intl.DateTimeFormat("en-GB", { ...DAY, year: "numeric" });
const TIME = { hour: "2-digit", minute: "2-digit", second: "2-digit" };
const timeFormat = new Intl.DateTimeFormat("en-GB", TIME);
// Sync windows are the backend's weekly UTC day boundaries: shown in UTC so a week reads as a week.
const windowDayFormat = new Intl.DateTimeFormat("en-GB", { ...DAY, year: "numeric", timeZone: "UTC" });
const windowShortDayFormat = new Intl.DateTimeFormat("en-GB", { ...DAY, timeZone: "UTC" });

export function windowText(window) {
  const start = toDate(window?.start);
  const end = toDate(window?.end);
  if (!start || !end) return "—";
  const sameYear = start.getUTCFullYear() === end.getUTCFullYear();
  const startText = (sameYear ? windowShortDayFormat : windowDayFormat).format(start);
  return `${startText} – ${windowDayFormat.format(end)}`;
}

export function triggerText(details = {}) {
  const trigger = TRIGGER_LABELS[details.trigger] ?? details.trigger ?? "—";
  return details.mode ? `${trigger} · ${details.mode}` : trigger;
}

export function timeText(value, now = new Date()) {
  const date = toDate(value);
  if (!date) return "—";
  const sameDay = dayFormat.format(date) === dayFormat.format(now);
  return sameDay ? timeFormat.format(date) : `${dayFormat.format(date)}, ${timeFormat.format(date)}`;
}

/** Running syncs first, then the most recently updated. */
export function compareSyncs(a, b) {
  const activeA = ACTIVE_STATUSES.has(statusOf(a));
  const activeB = ACTIVE_STATUSES.has(statusOf(b));
  if (activeA !== activeB) return activeA ? -1 : 1;
  return (toDate(b.updatedAt)?.getTime() ?? 0) - (toDate(a.updatedAt)?.getTime() ?? 0);
}

function startedMillis(sync) {
  return toDate(sync.startedAt)?.getTime() ?? toDate(sync.updatedAt)?.getTime() ?? 0;
}

/**
 * One provider user's syncs: `latest` is the most recently started real sync (a skipped trigger is
 * never "the latest sync"), `skippedSinceLatest` the triggers skipped after it started, `earlier` the rest
 * (newest first).
 */
export function groupProviderSyncs(syncs) {
  const ordered = [...syncs].sort((a, b) => startedMillis(b) - startedMillis(a));
  const latest = ordered.find((sync) => !isSkipped(sync)) ?? ordered[0] ?? null;
  const skippedSinceLatest = [];
  const earlier = [];
  for (const sync of ordered) {
    if (sync === latest) continue;
    if (isSkipped(sync) && startedMillis(sync) >= startedMillis(latest)) skippedSinceLatest.push(sync);
    else earlier.push(sync);
  }
  return { latest, skippedSinceLatest, earlier };
}
