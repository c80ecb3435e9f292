// The console end to end, in Debian's chromium driven by playwright-core: an analyst signs
// in, watches the alerts page while a reverse shell starts in the pod, opens the alert group,
// the alert, the shell's process tree, and follows the shell's flow to the remote endpoint.
// Run by tests/it/console.rs against a real aggregator fed by a real collector; the
// assertions here are on what each page shows. Prints one JSON summary line at the end.
//
// Environment: BASE (console URL), CREDENTIAL_FILE (an admin's), OTHER_CREDENTIAL_FILE (a
// viewer of another namespace), SHOTS (screenshot directory), GO_FILE
// (created once the alerts page is open: the pod starts its attack then), PEER (the
// attacker's address), SHELL_PORT, UPLOAD_PORT, POD (namespace/pod).
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const BASE = env("BASE");
const credential = fs.readFileSync(env("CREDENTIAL_FILE"), "utf8").trim();
const SHOTS = env("SHOTS");
const PEER = env("PEER");
const SHELL_PORT = env("SHELL_PORT");
const UPLOAD_PORT = env("UPLOAD_PORT");
const POD = env("POD");
fs.mkdirSync(SHOTS, { recursive: true });

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "procflow-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
  viewport: { width: 1440, height: 900 },
});
const summary = { pages: {}, problems: [] };
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(20_000);
  // A hostile name that ran as script would open a dialog: that is a failure.
  page.on("dialog", async (d) => {
    summary.problems.push(`dialog opened: ${d.message()}`);
    await d.dismiss();
  });
  page.on("pageerror", (e) => summary.problems.push(`page error: ${e}`));
  page.on("console", (m) => {
    if (m.type() === "error") summary.problems.push(`console error on ${page.url()}: ${m.text()}`);
  });
  let weight = 0;
  page.on("response", async (r) => {
    try { weight += (await r.body()).length; } catch { /* redirects have no body */ }
  });

  const shot = async (name) => {
    await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
    summary.pages[name] = { url: page.url().replace(BASE, ""), title: await page.title() };
  };
  const main = () => page.locator("main");

  // Signed out, every page leads to the sign-in form; a wrong credential is refused.
  await page.goto(`${BASE}/alerts?last=1h`);
  assert.match(page.url(), /\/signin\?next=/);
  await page.fill("#credential", "not-the-credential");
  await page.click("button[type=submit]");
  await page.getByText("That credential was not accepted.").waitFor();
  await shot("signin-refused");
  // The refusal is a 401, which chromium logs as a resource error: expected here only.
  summary.problems = summary.problems.filter((p) => !p.includes("401 (Unauthorized)"));
  await page.fill("#credential", credential);
  await page.click("button[type=submit]");
  await page.waitForURL(/\/alerts\?last=1h$/);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "procflow_session");
  assert.ok(session, "a session cookie is set");
  assert.equal(session.httpOnly, true, "the session cookie is HttpOnly");
  assert.equal(session.sameSite, "Strict", "the session cookie is SameSite=Strict");

  // The alerts page is open before the attack: the group must arrive without a reload.
  await shot("alerts-before");
  const opened = Date.now();
  fs.writeFileSync(env("GO_FILE"), "go\n");
  const groups = page.locator("#alert-groups");
  const shellGroup = groups.getByRole("link", { name: "Reverse shell (shell with a socket on stdio)" });
  await shellGroup.waitFor({ timeout: 60_000 });
  summary.alert_seen_after_go_ms = Date.now() - opened;
  await shot("alerts");
  const row = groups.locator("tr").filter({ hasText: "Reverse shell (shell with a socket on stdio)" });
  assert.match(await row.innerText(), /critical/, "severity is shown as a word");
  assert.match(await row.innerText(), /shop\/web/, "grouped by workload");

  // The group: its alerts, with the pod and the shell.
  await shellGroup.click();
  await page.waitForURL(/\/alerts\/group\?/);
  const groupTable = main().locator("table");
  assert.match(await groupTable.innerText(), new RegExp(POD.replace("/", "\\/")));
  await shot("alert-group");

  // The alert: evidence, the shell under its ancestors, the finding group.
  await groupTable.getByRole("link", { name: "Reverse shell (shell with a socket on stdio)" }).first().click();
  await page.waitForURL(/\/alert\?/);
  assert.match(await page.locator("h1").innerText(), /Alert: Reverse shell/);
  const lineage = page.locator("section", { has: page.locator("#lineage-h") });
  assert.match(await lineage.innerText(), /bash/);
  assert.match(await lineage.innerText(), /this alert/);
  const group = page.locator("section", { has: page.locator("#group-h") });
  assert.match(await group.innerText(), /Finding group/);
  summary.finding_group = (await group.innerText()).split("\n")[1];
  await shot("alert");

  // The process tree of the alerted process (the shell with a socket on stdio; an
  // interactive shell's subshells inherit that stdio too, so it may be one of them).
  await page.getByRole("link", { name: "Open the process tree with its flows" }).click();
  await page.waitForURL(/\/process\?/);
  const facts = await page.locator("section", { has: page.locator("#facts-h") }).innerText();
  assert.match(facts, /Standard input\/output\s+a socket/);
  assert.match(facts, /bash/);
  await shot("process");
  // Follow the tree up to the shell that holds the connection: its flow row names the
  // attacker and the port, with counters.
  const tree = () => page.locator("section", { has: page.locator("#tree-h") });
  let hops = 0;
  while ((await tree().getByRole("link", { name: PEER, exact: true }).count()) === 0) {
    assert.ok(hops < 4, "no flow to the attacker in the tree or its four nearest ancestors");
    const here = page.url();
    await tree().locator("ol.tree").first().locator(":scope > li").last().getByRole("link").first().click();
    await page.waitForURL((url) => url.toString() !== here);
    hops += 1;
  }
  summary.hops_to_the_shell = hops;
  const flowRow = tree().locator("tr", { has: page.getByRole("link", { name: PEER, exact: true }) }).first();
  assert.match(await flowRow.innerText(), new RegExp(`\\b${SHELL_PORT}\\b[\\s\\S]*outbound[\\s\\S]*north-south`));
  assert.match(await tree().innerText(), /bash/);
  await shot("process-shell");

  // Follow the shell's flow to the remote endpoint's profile.
  await flowRow.getByRole("link", { name: PEER, exact: true }).click();
  await page.waitForURL(/\/endpoint\?/);
  assert.equal(await page.locator("h1").innerText(), `Endpoint ${PEER}`);
  const who = await page.locator("section", { has: page.locator("#who-h") }).innerText();
  assert.match(who, new RegExp(POD.replace("/", "\\/")));
  assert.match(who, new RegExp(`\\b${SHELL_PORT}\\b`));
  assert.match(who, new RegExp(`\\b${UPLOAD_PORT}\\b`));
  assert.match(who, /MiB/, "the outbound transfer's bytes are shown");
  const endpointFacts = await page.locator("section", { has: page.locator("#ep-h") }).innerText();
  assert.match(endpointFacts, /New in this scope\s+yes/);
  const alertsWithFlow = await page.locator("section", { has: page.locator("#ealerts-h") }).innerText();
  assert.match(alertsWithFlow, /Shell owning an outbound connection|Reverse shell/);
  await shot("endpoint");

  // The other pages render for this scope.
  await page.goto(`${BASE}/?last=1h`);
  assert.equal(await page.locator("h1").innerText(), "Overview");
  await page.locator("[data-chart=chart-activity] canvas").waitFor();
  await shot("overview");
  // A laptop and a large monitor: no horizontal scroll of the page itself.
  for (const [name, width, height] of [["overview-laptop", 1280, 720], ["overview-wide", 2560, 1440]]) {
    await page.setViewportSize({ width, height });
    await page.goto(`${BASE}/?last=1h`);
    await page.locator("[data-chart=chart-activity] canvas").waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${name}: the page scrolls sideways by ${overflow}px`);
    await shot(name);
  }
  await page.setViewportSize({ width: 1440, height: 900 });
  // Keyboard: from the top of a page, Tab reaches the skip link first, then every
  // navigation link; Enter on the skip link moves to the content.
  await page.goto(`${BASE}/?last=1h`);
  const reached = new Set();
  for (let i = 0; i < 9; i++) {
    await page.keyboard.press("Tab");
    const label = await page.evaluate(() => document.activeElement.textContent.trim());
    if (i === 0) assert.equal(label, "Skip to content");
    reached.add(label);
  }
  await page.goto(`${BASE}/?last=1h`);
  await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  assert.equal(await page.evaluate(() => document.activeElement.id), "main");
  for (const label of ["Overview", "Alerts", "Service map", "Search", "Rules"]) {
    assert.ok(reached.has(label), `${label} is not reachable by Tab: ${[...reached]}`);
  }
  await page.goto(`${BASE}/pod?ns=${POD.split("/")[0]}&pod=${POD.split("/")[1]}&last=1h`);
  assert.match(await page.locator("#peers-h + div, #peers-h ~ *").first().innerText(), new RegExp(PEER.replaceAll(".", "\\.")));
  await shot("pod");
  await page.goto(`${BASE}/map?last=1h`);
  await page.locator("#map canvas").first().waitFor();
  assert.match(await page.locator("#edges-h ~ div").innerText(), new RegExp(PEER.replaceAll(".", "\\.")));
  await shot("map");
  await page.goto(`${BASE}/rules?last=1h`);
  const rules = await main().innerText();
  assert.match(rules, /PF-REVERSE-SHELL-STDIO/);
  await shot("rules");

  // The hostile process: its argv is shown as text, its control characters as escapes.
  await page.goto(`${BASE}/search?last=1h&kind=process&argv=onerror`);
  const results = main().locator("table");
  await results.waitFor();
  const hostile = await results.innerText();
  assert.ok(hostile.includes("<img src=x onerror=alert(1)>"), `argv shown as text: ${hostile}`);
  assert.ok(hostile.includes("\\u{202e}"), `the right-to-left override is shown escaped: ${hostile}`);
  assert.equal(await results.locator("img").count(), 0, "no element made from a process name");
  await shot("search-hostile");

  // First page weight: the overview, loaded fresh with every asset.
  weight = 0;
  await page.goto(`${BASE}/?last=1h`, { waitUntil: "networkidle" });
  summary.overview_bytes_cached = weight;

  // Sign out: the session is gone.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(/\/signin/);
  await page.goto(`${BASE}/alerts`);
  assert.match(page.url(), /\/signin\?next=/);

  // Nothing failed for the analyst (the map draws on a canvas, the charts from embedded
  // data); the other viewer's pages below answer 404 where the analyst's had a pod.
  assert.deepEqual(summary.problems, []);

  // A viewer of another namespace signs in and opens every page the analyst saw: none
  // shows the pod, its alerts, processes or peers.
  await page.fill("#credential", fs.readFileSync(env("OTHER_CREDENTIAL_FILE"), "utf8").trim());
  await page.click("button[type=submit]");
  await page.waitForURL(/\/alerts$/);
  assert.match(await page.locator(".who").innerText(), /viewer of other/);
  const seen = Object.entries(summary.pages).filter(([name]) => !name.startsWith("signin"));
  for (const [name, { url }] of seen) {
    const response = await page.goto(`${BASE}${url}`);
    const text = await page.locator("body").innerText();
    // The rules page names every rule; what it must not show is an alert count.
    const rule = name === "rules" ? " events)" : "Reverse shell (shell";
    for (const secret of [POD.split("/")[1], rule, "onerror", SHELL_PORT, UPLOAD_PORT, "3.0 MiB"]) {
      const at = text.indexOf(secret);
      assert.ok(at < 0, `${name} (${url}) shows ${JSON.stringify(secret)} to a viewer of another namespace: …${text.slice(Math.max(0, at - 200), at + 100)}…`);
    }
    assert.ok([200, 404].includes(response.status()), `${name}: ${response.status()}`);
    if (name === "alerts") await shot("other-viewer-alerts");
    if (name === "alert") await shot("other-viewer-alert");
  }

  summary.ok = true;
} catch (e) {
  summary.ok = false;
  summary.error = String(e && e.stack ? e.stack : e);
  try {
    const p = context.pages()[0];
    if (p) await p.screenshot({ path: path.join(SHOTS, "failure.png"), fullPage: true });
  } catch { /* the browser may be gone */ }
} finally {
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(summary));
process.exit(summary.ok ? 0 : 1);
