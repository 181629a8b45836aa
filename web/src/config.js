// Where the page's Firebase lives. Two sources, one place each:
//   firebase-config.json  (web/firebase-config.json, copied into dist/ by the build) the Firebase web
//                         app config: apiKey, authDomain, projectId. Put a real project's values here.
//   config.json           served by emailsync.web_server for local runs: the emulators' "host:port"
//                         (emulatorHost = Firestore, authEmulatorHost = Auth) and the project id.
// URL parameters `project=`, `emulator=` and `authEmulator=` win over both (one page, any emulator).

/**
 * @typedef {object} PageConfig
 * @property {object} firebase            options for initializeApp
 * @property {string} project             Firebase project id
 * @property {string|null} emulatorHost   "host:port" of the Firestore emulator (null = real Firestore)
 * @property {string|null} authEmulatorHost "host:port" of the Auth emulator (null = real Firebase Auth)
 */

const DEFAULT_PROJECT = "omnibutler-local";

async function fetchJson(path, fetchImpl) {
  try {
    const response = await fetchImpl(path, { cache: "no-store" });
    return response.ok ? await response.json() : {};
  } catch {
    return {};
  }
}

/** Fetches the defaults the web server injects; a page opened from elsewhere works without them. */
export function fetchServerDefaults(fetchImpl = globalThis.fetch) {
  return fetchJson("config.json", fetchImpl);
}

export function fetchFirebaseConfig(fetchImpl = globalThis.fetch) {
  return fetchJson("firebase-config.json", fetchImpl);
}

/** @returns {PageConfig} */
export function resolveConfig(search, serverDefaults = {}, firebaseConfig = {}) {
  const params = new URLSearchParams(search);
  const text = (name) => {
    const value = params.get(name);
    return value && value.trim() ? value.trim() : null;
  };
  const project = text("project") ?? serverDefaults.project ?? firebaseConfig.projectId ?? DEFAULT_PROJECT;
  return {
    firebase: { apiKey: "emulator-only", ...firebaseConfig, projectId: project },
    project,
    emulatorHost: text("emulator") ?? serverDefaults.emulatorHost ?? null,
    authEmulatorHost: text("authEmulator") ?? serverDefaults.authEmulatorHost ?? null,
  };
}

/** Splits "host:port" (IPv6 in brackets allowed) for connectFirestoreEmulator. */
export function splitHostPort(hostPort) {
  const match = /^\[?([^\]]+?)\]?:(\d+)$/.exec(hostPort);
  if (!match) throw new Error(`emulator must be host:port, got "${hostPort}"`);
  return { host: match[1], port: Number(match[2]) };
}
