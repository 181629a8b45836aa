// Who is looking and where the Firestore emulator is: URL parameters win over the server's /config.json.

/**
 * @typedef {object} PageConfig
 * @property {string|null} uid        the signed-in app user (mock token `sub`)
 * @property {string|null} familyId   their family, if any
 * @property {boolean} admin          carry the `admin == true` custom claim
 * @property {string} project         Firebase project id
 * @property {string} emulatorHost    "host:port" of the Firestore emulator
 */

const DEFAULT_PROJECT = "omnibutler-local";
const DEFAULT_EMULATOR_HOST = "127.0.0.1:8080";

/** Fetches the defaults the web server injects; a page opened from elsewhere works without them. */
export async function fetchServerDefaults(fetchImpl = globalThis.fetch) {
  try {
    const response = await fetchImpl("config.json", { cache: "no-store" });
    return response.ok ? await response.json() : {};
  } catch {
    return {};
  }
}

/** @returns {PageConfig} */
export function resolveConfig(search, serverDefaults = {}) {
  const params = new URLSearchParams(search);
  const text = (name) => {
    const value = params.get(name);
    return value && value.trim() ? value.trim() : null;
  };
  return {
    uid: text("uid"),
    familyId: text("familyId"),
    admin: ["1", "true", "yes"].includes((text("admin") ?? "").toLowerCase()),
    project: text("project") ?? serverDefaults.project ?? DEFAULT_PROJECT,
    emulatorHost: text("emulator") ?? serverDefaults.emulatorHost ?? DEFAULT_EMULATOR_HOST,
  };
}

/** Splits "host:port" (IPv6 in brackets allowed) for connectFirestoreEmulator. */
export function splitHostPort(hostPort) {
  const match = /^\[?([^\]]+?)\]?:(\d+)$/.exec(hostPort);
  if (!match) throw new Error(`emulator must be host:port, got "${hostPort}"`);
  return { host: match[1], port: Number(match[2]) };
}
