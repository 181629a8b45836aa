// Live Gmail sync progress: the signed-in user's syncs (and their family's) from Firestore `syncProgress`.
import { initializeApp } from "firebase/app";
import { connectFirestoreEmulator, getFirestore } from "firebase/firestore";
import { fetchServerDefaults, resolveConfig, splitHostPort } from "./config.js";
import { createRenderer } from "./render.js";
import { subscribeToSyncs } from "./subscription.js";

/** The unsigned token the emulator accepts in place of Firebase Auth: same claims a real ID token has. */
function mockUserToken({ uid, admin }) {
  return { sub: uid, user_id: uid, ...(admin ? { admin: true } : {}) };
}

function showViewer(config) {
  const viewer = document.getElementById("viewer");
  const parts = [`Signed in as ${config.uid}`];
  if (config.familyId) parts.push(`family ${config.familyId}`);
  if (config.admin) parts.push("admin");
  viewer.textContent = parts.join(" · ");
}

function showFatal(text) {
  const syncs = document.getElementById("syncs");
  const message = document.createElement("p");
  message.className = "notice";
  message.setAttribute("data-testid", "notice");
  message.textContent = text;
  document.getElementById("notices").replaceChildren(message);
  syncs.replaceChildren();
  syncs.setAttribute("aria-busy", "false");
  document.getElementById("viewer").textContent = "Not signed in";
}

async function start() {
  const config = resolveConfig(window.location.search, await fetchServerDefaults());
  if (!config.uid) {
    showFatal("Add ?uid=<appUserId> (and &familyId=<familyId>) to the address to see your syncs.");
    return;
  }
  showViewer(config);
  const app = initializeApp({ projectId: config.project, apiKey: "emulator-only" }, `progress-${config.uid}`);
  const db = getFirestore(app);
  const { host, port } = splitHostPort(config.emulatorHost);
  connectFirestoreEmulator(db, host, port, { mockUserToken: mockUserToken(config) });

  const render = createRenderer(document.getElementById("syncs"), document.getElementById("notices"));
  subscribeToSyncs(db, config, render);
}

start().catch((error) => {
  console.error(error);
  showFatal(`The progress page could not start: ${error.message}`);
});
