// Live Gmail sync progress: the signed-in user's syncs (and their family's) from Firestore `syncProgress`.
// Sign-in is Firebase Authentication (email + password, or Google); the page follows onAuthStateChanged.
// Who may read what is decided by firestore.rules on the ID token: uid, and the custom claims `admin`
// (every sync) and `familyId` (which family's syncs to subscribe to; the rules check the family's
// memberIds, so a familyId claim alone grants nothing).
import { initializeApp } from "firebase/app";
import {
  GoogleAuthProvider,
  connectAuthEmulator,
  getAuth,
  onAuthStateChanged,
  signInWithEmailAndPassword,
  signInWithCredential,
  signInWithPopup,
  signOut,
} from "firebase/auth";
import { connectFirestoreEmulator, getFirestore } from "firebase/firestore";
import { fetchFirebaseConfig, fetchServerDefaults, resolveConfig, splitHostPort } from "./config.js";
import { createRenderer } from "./render.js";
import { subscribeToProviderUsers, subscribeToSyncs } from "./subscription.js";

const $ = (id) => document.getElementById(id);

const SIGN_IN_ERRORS = {
  "auth/invalid-credential": "Wrong email or password.",
  "auth/wrong-password": "Wrong email or password.",
  "auth/user-not-found": "Wrong email or password.",
  "auth/invalid-email": "That is not a valid email address.",
  "auth/too-many-requests": "Too many attempts: wait a moment and try again.",
  "auth/popup-closed-by-user": "Google sign-in was closed before it finished.",
  "emulator/google-email-missing": "Type the Google account's email above (Auth emulator).",
};

function signInErrorText(error) {
  return SIGN_IN_ERRORS[error?.code] ?? `Sign-in failed (${error?.code ?? error?.message ?? "error"}).`;
}

function showViewer(user, claims) {
  const parts = [`Signed in as ${user.email ?? user.uid}`];
  if (typeof claims.familyId === "string") parts.push(`family ${claims.familyId}`);
  if (claims.admin === true) parts.push("admin");
  $("viewer").textContent = parts.join(" · ");
}

function showSignedOut() {
  $("viewer").textContent = "Not signed in";
  $("sign-in").hidden = false;
  $("sign-out").hidden = true;
  $("notices").replaceChildren();
  const syncs = $("syncs");
  syncs.hidden = true;
  syncs.replaceChildren();
  syncs.setAttribute("aria-busy", "false");
}

function showFatal(text) {
  const message = document.createElement("p");
  message.className = "notice";
  message.setAttribute("data-testid", "notice");
  message.textContent = text;
  $("notices").replaceChildren(message);
  $("syncs").replaceChildren();
  $("syncs").setAttribute("aria-busy", "false");
}

/**
 * Google sign-in. Against the Auth emulator the page signs in the Google account named in the Email
 * field with the emulator's fake Google ID token (`GoogleAuthProvider.credential('{"sub", "email", ...}')`,
 * which the emulator accepts as Google's): its popup account chooser loads scripts from the internet.
 * Against a real project: Google's popup.
 */
function signInWithGoogle(auth, usesEmulator, email) {
  if (!usesEmulator) return signInWithPopup(auth, new GoogleAuthProvider());
  if (!email) return Promise.reject({ code: "emulator/google-email-missing" });
  const fakeIdToken = JSON.stringify({ sub: `google-${email}`, email, email_verified: true });
  return signInWithCredential(auth, GoogleAuthProvider.credential(fakeIdToken));
}

function wireSignIn(auth, usesEmulator) {
  const form = $("sign-in-form");
  const error = $("sign-in-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault(); // Enter in either field submits too
    error.textContent = "";
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await signInWithEmailAndPassword(auth, form.email.value.trim(), form.password.value);
      form.password.value = "";
    } catch (failure) {
      error.textContent = signInErrorText(failure);
    } finally {
      button.disabled = false;
    }
  });
  $("sign-in-google").addEventListener("click", async () => {
    error.textContent = "";
    try {
      await signInWithGoogle(auth, usesEmulator, form.email.value.trim());
    } catch (failure) {
      error.textContent = signInErrorText(failure);
    }
  });
  $("sign-out").addEventListener("click", () => signOut(auth));
}

async function start() {
  const [serverDefaults, firebaseConfig] = await Promise.all([fetchServerDefaults(), fetchFirebaseConfig()]);
  const config = resolveConfig(window.location.search, serverDefaults, firebaseConfig);
  const app = initializeApp(config.firebase);
  const auth = getAuth(app);
  if (config.authEmulatorHost) {
    connectAuthEmulator(auth, `http://${config.authEmulatorHost}`, { disableWarnings: true });
  }
  const db = getFirestore(app);
  if (config.emulatorHost) {
    const { host, port } = splitHostPort(config.emulatorHost);
    connectFirestoreEmulator(db, host, port);
  }
  wireSignIn(auth, Boolean(config.authEmulatorHost));

  let unsubscribe = () => {};
  onAuthStateChanged(auth, async (user) => {
    unsubscribe();
    unsubscribe = () => {};
    if (!user) {
      showSignedOut();
      return;
    }
    const { claims } = await user.getIdTokenResult();
    if (auth.currentUser?.uid !== user.uid) return; // signed out (or switched) meanwhile
    showViewer(user, claims);
    $("sign-in").hidden = true;
    $("sign-out").hidden = false;
    const syncsBox = $("syncs");
    syncsBox.hidden = false;
    syncsBox.setAttribute("aria-busy", "true");
    const viewer = {
      uid: user.uid,
      familyId: typeof claims.familyId === "string" && claims.familyId ? claims.familyId : null,
      admin: claims.admin === true,
    };
    const render = createRenderer(syncsBox, $("notices"));
    let syncState = { syncs: new Map(), problems: [], loading: true };
    let accounts = { providerUsers: new Map(), loaded: false };
    let answered = false;
    const draw = () =>
      render({
        ...syncState,
        loading: syncState.loading || !answered,
        providerUsers: accounts.providerUsers,
        providerUsersLoaded: accounts.loaded,
      });
    const stopSyncs = subscribeToSyncs(db, viewer, (state) => {
      syncState = state;
      draw();
    });
    const stopAccounts = subscribeToProviderUsers(db, viewer, (state) => {
      accounts = state;
      answered = true;
      draw();
    });
    unsubscribe = () => {
      stopSyncs();
      stopAccounts();
    };
  });
}

start().catch((error) => {
  console.error(error);
  showFatal(`The progress page could not start: ${error.message}`);
});
