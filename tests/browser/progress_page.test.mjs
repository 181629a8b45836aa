// The live progress page in Debian's chromium, against the real Firestore emulator and security rules.
// Run by tests/integration/test_web_page.py, which starts the emulator, the page server
// (emailsync.local.web_server) and the backend control endpoint (backend_control.py) and passes their URLs
// in the environment:
//   PROGRESS_PAGE_URL     the page server's root URL
//   BACKEND_CONTROL_URL   POST {method, args}: the backend writes Firestore (seed, progress transitions)
//   SCREENSHOT_PATH       where to save the page mid-sync (optional)
//   SCREENSHOT_DIR        where to save one picture per state (optional)
// Every scenario signs in through the page's form (Firebase Auth emulator, email + password, Enter
// submits); the Firestore emulator enforces firestore.rules on the emulator-issued ID token.
//   CHROMIUM_PATH         the browser (default /usr/bin/chromium)
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { after, before, beforeEach, afterEach, test } from "node:test";

// playwright-core is a dependency of web/, not of this folder.
const require = createRequire(new URL("../../web/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const PAGE_URL = required("PROGRESS_PAGE_URL");
const CONTROL_URL = required("BACKEND_CONTROL_URL");
const SCREENSHOT_PATH = process.env.SCREENSHOT_PATH;
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR;
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const UI_TIMEOUT_MS = 10_000;

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests via tests/integration/test_web_page.py`);
  return value;
}

/** Asks the backend (Python, real Firestore writes) to do something; returns its result. */
async function backend(method, args = {}) {
  const response = await fetch(CONTROL_URL, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ method, args }),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(`backend ${method} failed: ${body.error}`);
  return body.result;
}

let browser;
let household;
let context;
let pageErrors;

before(async () => {
  const executablePath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
  browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS });
  household = await backend("reset_household");
});

after(async () => {
  await browser?.close();
});

beforeEach(async () => {
  context = await browser.newContext({ viewport: { width: 860, height: 520 }, deviceScaleFactor: 1 });
  pageErrors = [];
});

afterEach(async () => {
  await context?.close();
});

/** Opens the page signed out; waits for the sign-in form. */
async function openSignedOut() {
  const page = await context.newPage();
  page.setDefaultTimeout(UI_TIMEOUT_MS);
  page.on("pageerror", (error) => pageErrors.push(error.message));
  await page.goto(PAGE_URL);
  await page.getByRole("heading", { name: "Sign in to see your syncs" }).waitFor();
  return page;
}

/**
 * Signs in as `role` (a key of household.emails) through the form, with the keyboard only: the fields
 * are found by their labels and Enter submits. Waits until every listener answered once.
 */
async function signIn(role, page = null) {
  page ??= await openSignedOut();
  await page.getByLabel("Email").fill(household.emails[role]);
  await page.getByLabel("Password").fill(household.password);
  await page.getByLabel("Password").press("Enter");
  await page.locator('[data-testid="syncs"][aria-busy="false"]:not([hidden])').waitFor();
  return page;
}

/** One picture per state for README (docs/) when SCREENSHOT_DIR is set. */
async function snapshot(page, name) {
  if (!SCREENSHOT_DIR) return;
  await page.waitForTimeout(700); // let bar transitions finish
  await page.screenshot({ path: `${SCREENSHOT_DIR}/screenshot-${name}.png`, fullPage: true });
}

function syncCard(page, syncId) {
  return page.locator(`[data-testid="sync"][data-sync-id="${syncId}"]`);
}

/** The watcher's first write for a new sync: a pending progress document (defaults: the owner's Gmail). */
function createPendingSync(syncId, options = {}) {
  const { appUserId = household.owner, familyId = household.family, trigger = "manual" } = options;
  return backend("create_pending", {
    sync_id: syncId,
    app_user_id: appUserId,
    family_id: familyId,
    provider_user_id: options.provider ?? "ada@gmail.example",
    trigger,
  });
}

/** Waits until the card of `syncId` shows `status` and `percent`. */
async function waitForSync(page, syncId, { status, percent }) {
  const card = syncCard(page, syncId);
  await card.and(page.locator(`[data-status="${status}"]`)).waitFor();
  await card.getByTestId("sync-percent").getByText(`${percent}%`, { exact: true }).waitFor();
  return card;
}

async function textOf(card, testId) {
  return (await card.getByTestId(testId).textContent()).trim();
}

test("owner watches their sync go from pending through 30% and 70% to completed at 100%", async () => {
  const earlierSync = "sync-owner-earlier";
  await createPendingSync(earlierSync, { trigger: "schedule" });
  await backend("start", { sync_id: earlierSync, mode: "incremental", total_estimate: 12 });
  await backend("complete", { sync_id: earlierSync, emailsProcessed: 12 });
  const syncId = "sync-owner-backfill";
  await createPendingSync(syncId, { trigger: "connect" });
  const page = await signIn("owner");

  let card = await waitForSync(page, syncId, { status: "pending", percent: 0 });
  assert.equal(await textOf(card, "sync-status"), "Pending");
  assert.equal(await textOf(card, "sync-user"), household.owner);
  assert.match(await textOf(card, "sync-provider"), /ada@gmail\.example/);
  assert.match(await textOf(card, "sync-trigger"), /Gmail connected/);

  await backend("start", { sync_id: syncId, mode: "backfill", total_estimate: 300 });
  card = await waitForSync(page, syncId, { status: "in_progress", percent: 0 });
  assert.equal(await textOf(card, "sync-status"), "In progress");
  const order = await page.getByTestId("sync").evaluateAll((cards) => cards.map((c) => c.dataset.syncId));
  assert.deepEqual(order, [syncId, earlierSync], "the running sync comes before finished ones");

  const window = { start: "2026-11-09T00:00:00Z", end: "2026-11-16T00:00:00Z" };
  await backend("update", {
    sync_id: syncId,
    progress: 30,
    emailsProcessed: 90,
    emailsTotalEstimate: 300,
    currentWindow: window,
  });
  card = await waitForSync(page, syncId, { status: "in_progress", percent: 30 });
  assert.equal(await textOf(card, "sync-emails"), "90 of ~300 emails");
  assert.equal(await textOf(card, "sync-window"), "9 Nov – 16 Nov 2026");

  await backend("update", { sync_id: syncId, progress: 70, emailsProcessed: 210, batches: 5 });
  card = await waitForSync(page, syncId, { status: "in_progress", percent: 70 });
  assert.equal(await textOf(card, "sync-emails"), "210 of ~300 emails");
  assert.equal(await card.getByRole("progressbar").getAttribute("aria-valuenow"), "70");
  assert.match(await textOf(card, "sync-trigger"), /backfill/);
  assert.notEqual(await textOf(card, "sync-updated"), "—");
  if (SCREENSHOT_PATH) {
    await page.waitForTimeout(700); // let the bar's width transition finish before the picture
    await page.screenshot({ path: SCREENSHOT_PATH, fullPage: true });
  }

  await backend("complete", { sync_id: syncId, emailsProcessed: 300 });
  card = await waitForSync(page, syncId, { status: "completed", percent: 100 });
  await snapshot(page, "completed");
  assert.equal(await textOf(card, "sync-status"), "Completed");
  assert.equal(await textOf(card, "sync-emails"), "300 of ~300 emails");
  assert.equal(await card.getByTestId("sync-error").isVisible(), false);
  assert.deepEqual(pageErrors, []);
});

test("family member sees the owner's family sync live, not the owner's private syncs", async () => {
  const familySync = "sync-family-visible";
  const privateSync = "sync-owner-private";
  await createPendingSync(familySync, { trigger: "schedule" });
  await backend("start", { sync_id: familySync, mode: "incremental", total_estimate: 40 });
  await backend("update", { sync_id: familySync, progress: 40, emailsProcessed: 16 });
  await createPendingSync(privateSync, { familyId: null, provider: "ada-work@gmail.example" });

  const page = await signIn("member");
  const card = await waitForSync(page, familySync, { status: "in_progress", percent: 40 });
  assert.equal(await textOf(card, "sync-user"), household.owner);
  assert.match(await textOf(card, "sync-trigger"), /Scheduled · incremental/);

  await backend("update", { sync_id: familySync, progress: 55, emailsProcessed: 22 });
  await waitForSync(page, familySync, { status: "in_progress", percent: 55 });
  await snapshot(page, "family-member");

  assert.equal(await syncCard(page, privateSync).count(), 0);
  assert.ok(!(await page.content()).includes(privateSync));
  assert.equal(await page.getByTestId("notice").count(), 0);
  assert.deepEqual(pageErrors, []);
});

test("stranger sees 'No syncs' and none of the household's data", async () => {
  await createPendingSync("sync-before-stranger", { trigger: "connect" });

  const page = await signIn("stranger");
  assert.equal(await page.getByTestId("sync").count(), 0);
  assert.equal(await textOf(page, "empty"), "No syncs");
  await page.getByTestId("no-gmail").getByText(/No Gmail account is connected yet/).waitFor();
  await snapshot(page, "empty");
  assertNothingLeaks(await page.content());
  assert.deepEqual(pageErrors, []);
});

test("user whose token carries a forged familyId claim gets a friendly permission message and no data", async () => {
  // Her ID token says familyId "fam-1" (set by the backend, so the claim itself is genuine), but
  // families/fam-1.memberIds does not list her: the rules refuse the family query.
  const page = await signIn("forger");
  assert.match(await page.getByTestId("viewer").textContent(), /family fam-1/);
  assert.equal(await textOf(page, "notice"), "You don't have permission to see your family's syncs.");
  assert.equal(await page.getByTestId("sync").count(), 0);
  assert.equal(await textOf(page, "empty"), "No syncs");
  assertNothingLeaks(await page.content());
  await snapshot(page, "forged-claim");
  assert.deepEqual(pageErrors, []);
});

function assertNothingLeaks(html) {
  const secrets = [household.owner, household.member, "sync-before-stranger", "sync-owner-backfill", "ada@"];
  for (const secret of secrets) {
    assert.ok(!html.includes(secret), `the page shows "${secret}" to a stranger`);
  }
}

test("failed sync shows Failed and its error text", async () => {
  const syncId = "sync-owner-failed";
  const error = "Gmail authorization revoked: the user removed access to the mailbox";
  await createPendingSync(syncId);
  await backend("start", { sync_id: syncId, mode: "backfill", total_estimate: 500 });
  await backend("update", { sync_id: syncId, progress: 20, emailsProcessed: 100 });
  await backend("fail", { sync_id: syncId, error });

  const page = await signIn("owner");
  const card = await waitForSync(page, syncId, { status: "failed", percent: 20 });
  assert.equal(await textOf(card, "sync-status"), "Failed");
  assert.equal(await textOf(card, "sync-error"), error);
  assert.equal(await card.getByTestId("sync-error").isVisible(), true);
  const badge = card.getByTestId("sync-status");
  const badgeColour = await badge.evaluate((element) => getComputedStyle(element).color);
  assert.equal(badgeColour, "rgb(198, 40, 40)"); // --failed: red, unlike every other status
  await snapshot(page, "failed");
  assert.deepEqual(pageErrors, []);
});

test("admin sees the syncs of every household, with or without a family", async () => {
  const strangerSync = "sync-stranger-own";
  const ownerPrivateSync = "sync-owner-no-family";
  const strangerAccount = { appUserId: household.stranger, familyId: null, provider: "eve@gmail.example" };
  await createPendingSync(strangerSync, strangerAccount);
  await createPendingSync(ownerPrivateSync, { familyId: null, provider: "ada-work@gmail.example" });

  const page = await signIn("admin");
  const strangerCard = await waitForSync(page, strangerSync, { status: "pending", percent: 0 });
  assert.equal(await textOf(strangerCard, "sync-user"), household.stranger);
  const ownerCard = await waitForSync(page, ownerPrivateSync, { status: "pending", percent: 0 });
  assert.equal(await textOf(ownerCard, "sync-user"), household.owner);
  assert.match(await page.getByTestId("viewer").textContent(), /admin/);
  assert.equal(await page.getByTestId("notice").count(), 0);
  await snapshot(page, "admin");
  assert.deepEqual(pageErrors, []);
});

test("signed out: the sign-in form, no data on the page, and the rules refuse an unauthenticated read", async () => {
  const syncId = "sync-before-sign-out";
  await createPendingSync(syncId, { trigger: "connect" });
  const page = await signIn("owner");
  await waitForSync(page, syncId, { status: "pending", percent: 0 });

  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in to see your syncs" }).waitFor();
  assert.equal(await textOf(page, "viewer"), "Not signed in");
  assert.equal(await page.getByTestId("sync").count(), 0);
  assert.ok(!(await page.content()).includes(syncId));
  await snapshot(page, "signed-out");

  // Nothing is readable without a token, straight through Firestore's REST API.
  const { emulatorHost, project } = await (await fetch(`${PAGE_URL}config.json`)).json();
  const documents = `http://${emulatorHost}/v1/projects/${project}/databases/(default)/documents`;
  for (const path of [`syncProgress/${syncId}`, "syncProgress", `families/${household.family}`]) {
    const response = await fetch(`${documents}/${path}`);
    assert.equal(response.status, 403, `an unauthenticated read of ${path} answered ${response.status}`);
  }

  // A wrong password says so and keeps the form; the right one (Enter again) signs back in.
  await page.getByLabel("Email").fill(household.emails.owner);
  await page.getByLabel("Password").fill("not-the-password");
  await page.getByLabel("Password").press("Enter");
  await page.getByTestId("sign-in-error").getByText("Wrong email or password.").waitFor();
  await signIn("owner", page);
  await waitForSync(page, syncId, { status: "pending", percent: 0 });
  assert.deepEqual(pageErrors, []);
});

test("skipped trigger shows 'Already syncing', not a finished sync; earlier syncs fold away; a new incremental sync appears live", async () => {
  const provider = "ada-skip@gmail.example";
  const earlier = "sync-skip-earlier";
  await createPendingSync(earlier, { provider, trigger: "connect" });
  await backend("start", { sync_id: earlier, mode: "backfill", total_estimate: 50 });
  await backend("complete", { sync_id: earlier, emailsProcessed: 50 });
  const running = "sync-skip-running";
  await createPendingSync(running, { provider, trigger: "schedule" });
  await backend("start", { sync_id: running, mode: "incremental", total_estimate: 10 });
  await backend("update", { sync_id: running, progress: 40, emailsProcessed: 4 });
  const skipped = "sync-skip-trigger";
  await createPendingSync(skipped, { provider, trigger: "manual" });
  await backend("skip", { sync_id: skipped, active_sync_id: running });

  const page = await signIn("owner");
  await waitForSync(page, running, { status: "in_progress", percent: 40 });
  const skippedCard = syncCard(page, skipped);
  await skippedCard.and(page.locator('[data-status="skipped"]')).waitFor();
  assert.equal(await textOf(skippedCard, "sync-status"), "Already syncing");
  assert.match(await textOf(skippedCard, "sync-note"), new RegExp(`sync ${running} of this mailbox is still running`));
  assert.equal(await skippedCard.getByRole("progressbar").isVisible(), false, "no bar for a skipped trigger");
  assert.ok(!(await skippedCard.innerText()).includes("100%"));
  assert.ok(!(await skippedCard.innerText()).includes("Completed"));

  const group = page.locator(`[data-testid="provider-group"][data-provider-user-id="${provider}"]`);
  const folded = group.getByTestId("earlier-syncs");
  assert.equal(await folded.evaluate((details) => details.tagName === "DETAILS" && !details.open), true);
  assert.equal(await syncCard(page, earlier).isVisible(), false, "earlier syncs are folded away");
  assert.match(await folded.locator("summary").innerText(), /Earlier syncs \(1\)/);
  await snapshot(page, "skipped");

  // The running sync finishes; the next hourly incremental sync shows up live as the latest one.
  await backend("complete", { sync_id: running, emailsProcessed: 10 });
  const next = "sync-skip-next";
  await createPendingSync(next, { provider, trigger: "schedule" });
  await backend("start", { sync_id: next, mode: "incremental", total_estimate: 3 });
  await waitForSync(page, next, { status: "in_progress", percent: 0 });
  await folded.locator("summary").click();
  await waitForSync(page, running, { status: "completed", percent: 100 });
  assert.match(await folded.locator("summary").innerText(), /Earlier syncs \(3\)/);
  assert.deepEqual(pageErrors, []);
});

test("revoked Gmail shows 'Reconnect Gmail' for that account", async () => {
  const provider = "pu-ada-revoked";
  await backend("put_provider_user", {
    provider_user_id: provider,
    app_user_id: household.owner,
    email: "ada.revoked@gmail.example",
    family_id: household.family,
    needs_reauth: true,
  });
  const syncId = "sync-revoked";
  await createPendingSync(syncId, { provider, trigger: "schedule" });
  await backend("start", { sync_id: syncId, mode: "incremental" });
  await backend("fail", { sync_id: syncId, error: "Gmail authorization revoked: reconnect Gmail" });

  const page = await signIn("owner");
  const group = page.locator(`[data-testid="provider-group"][data-provider-user-id="${provider}"]`);
  const reauth = group.getByTestId("reauth");
  await reauth.waitFor();
  assert.match(await reauth.innerText(), /Gmail access for ada\.revoked@gmail\.example was revoked/);
  await reauth.getByRole("button", { name: "Reconnect Gmail" }).waitFor();
  await waitForSync(page, syncId, { status: "failed", percent: 0 });
  await snapshot(page, "reconnect");

  // The backend clears the flag on reconnect: the prompt goes away live.
  await backend("put_provider_user", {
    provider_user_id: provider,
    app_user_id: household.owner,
    email: "ada.revoked@gmail.example",
    family_id: household.family,
  });
  await reauth.waitFor({ state: "hidden" });
  assert.deepEqual(pageErrors, []);
});

test("Google sign-in (the Auth emulator's fake Google account) signs in a user with no Gmail connected", async () => {
  const page = await openSignedOut();
  await page.getByLabel("Email").fill("new.google.user@gmail.example");
  await page.getByRole("button", { name: "Sign in with Google" }).click();
  await page.locator('[data-testid="syncs"][aria-busy="false"]:not([hidden])').waitFor();
  assert.equal(await textOf(page, "viewer"), "Signed in as new.google.user@gmail.example");
  assert.equal(await textOf(page, "empty"), "No syncs");
  await page.getByTestId("no-gmail").waitFor();
  assertNothingLeaks(await page.content());
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in to see your syncs" }).waitFor();
  assert.deepEqual(pageErrors, []);
});
