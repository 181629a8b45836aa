// Live subscription to the syncs a user may see: their own plus their family's (an admin: everyone's),
// merged by syncId. Each listener keeps only the most recent syncs, so a long history of scheduled
// syncs never makes the page heavy (indexes: firestore.indexes.json).
import { collection, limit, onSnapshot, orderBy, query, where } from "firebase/firestore";

export const RECENT_SYNCS_LIMIT = 20;

/**
 * @typedef {object} SubscriptionState
 * @property {Map<string, object>} syncs   syncId -> syncProgress data (each listener's latest view, merged)
 * @property {string[]} problems           friendly texts for listeners that failed
 * @property {boolean} loading             true until every listener answered once (data or error)
 */

const PERMISSION_ERRORS = {
  own: "You don't have permission to see your syncs.",
  family: "You don't have permission to see your family's syncs.",
  all: "You don't have permission to see everyone's syncs.",
};

function describeError(scope, error) {
  if (error?.code === "permission-denied") return PERMISSION_ERRORS[scope];
  if (error?.code === "unavailable") return "The progress service can't be reached right now; retrying…";
  return `Live updates stopped (${error?.code ?? "error"}). Reload the page to try again.`;
}

/** [scope, query constraints] for each listener the viewer needs. */
function scopesFor({ uid, familyId, admin }) {
  const recent = [orderBy("updatedAt", "desc"), limit(RECENT_SYNCS_LIMIT)];
  if (admin) return [["all", recent]];
  const scopes = [["own", [where("appUserId", "==", uid), ...recent]]];
  if (familyId) scopes.push(["family", [where("familyId", "==", familyId), ...recent]]);
  return scopes;
}

/**
 * Subscribes to `syncProgress` where appUserId == uid and, with a family, where familyId == familyId
 * (an admin: the whole collection). Calls `onChange(state)` after every snapshot or error.
 * Returns the unsubscribe function.
 */
export function subscribeToSyncs(db, viewer, onChange) {
  const scopes = scopesFor(viewer);
  /** scope -> {docs: Map|null, problem: string|null} */
  const views = new Map(scopes.map(([scope]) => [scope, { docs: null, problem: null }]));

  const publish = () => {
    const syncs = new Map();
    const problems = [];
    let loading = false;
    for (const view of views.values()) {
      if (view.problem) problems.push(view.problem);
      else if (view.docs === null) loading = true;
      for (const [syncId, data] of view.docs ?? []) syncs.set(syncId, data);
    }
    onChange({ syncs, problems, loading });
  };

  const unsubscribers = scopes.map(([scope, constraints]) =>
    onSnapshot(
      query(collection(db, "syncProgress"), ...constraints),
      (snapshot) => {
        const docs = new Map();
        for (const doc of snapshot.docs) docs.set(doc.id, { syncId: doc.id, ...doc.data() });
        views.set(scope, { docs, problem: null });
        publish();
      },
      (error) => {
        // A failed listener shows nothing it might have shown before: no stale data after a revocation.
        views.set(scope, { docs: null, problem: describeError(scope, error) });
        publish();
      },
    ),
  );
  return () => unsubscribers.forEach((unsubscribe) => unsubscribe());
}

/**
 * The viewer's own connected accounts (`providerUsers` where appUserId == uid; an admin: all, capped):
 * for "Reconnect Gmail" and the no-Gmail empty state. Calls `onChange({providerUsers, loaded})`.
 */
export function subscribeToProviderUsers(db, { uid, admin }, onChange) {
  const constraints = admin ? [limit(100)] : [where("appUserId", "==", uid)];
  return onSnapshot(
    query(collection(db, "providerUsers"), ...constraints),
    (snapshot) => {
      const providerUsers = new Map(snapshot.docs.map((doc) => [doc.id, doc.data()]));
      onChange({ providerUsers, loaded: true });
    },
    () => onChange({ providerUsers: new Map(), loaded: false }),
  );
}
