// Drives the preview UI in headless Chromium as a user would: open it, start a debug session,
// send hits carrying its token, watch them appear, open a blocked tag and read why.
// Run by tests/e2e/admin.rs: node preview.mjs <ui url with #token=...> <public url> <screenshot path>
import { chromium } from "playwright-core";

const [uiUrl, publicUrl, screenshot] = process.argv.slice(2);
const executablePath = process.env.SLUICE_CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  // As root in CI, and with no network beyond loopback: no sandbox, no background fetches.
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
function check(condition, what) { if (!condition) throw new Error(what); }
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", e => errors.push(e.message));
  await page.goto(uiUrl);
  check(!(await page.url()).includes("token="), "the token leaves the address bar once read");
  await page.getByTestId("start-session").click();
  const header = await page.getByTestId("session-header").textContent({ timeout: 5000 });
  const [name, token] = header.split(": ");
  check(name === "x-sluice-preview" && token.length === 32, "a session header: " + header);

  const send = async (query) => {
    const r = await fetch(publicUrl + "/g/collect?v=2&tid=G-TEST&cid=1.2&" + query, { method: "POST", headers: { [name]: token } });
    check(r.status === 204, "the hit was accepted: " + r.status);
  };
  await send("en=page_view&gcs=G100&gcd=13p3p3p2p5l1&dl=https%3A%2F%2Fshop.example%2F");
  const rows = page.getByTestId("request-row");
  await rows.first().waitFor({ timeout: 10000 });
  check(await rows.count() === 1, "one recorded request");
  await send("en=purchase&gcs=G111&gcd=13r3r3r2r5l1&epn.value=30&cu=EUR&dl=https%3A%2F%2Fshop.example%2Fcheckout");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=request-row]").length === 2, null, { timeout: 10000 });

  // The older row is the denied page_view: open it and its blocked tag.
  await rows.nth(1).click();
  const ads = page.locator("[data-testid=tag][data-tag=ads]");
  await ads.waitFor({ timeout: 5000 });
  check(await ads.getAttribute("data-state") === "blocked", "ads is blocked");
  await ads.locator("summary").click();
  const why = await ads.textContent();
  check(why.includes("blocked by consent: ad_storage, ad_user_data not granted"), "the blocked tag says which purposes: " + why);
  const checkout = await page.locator("[data-testid=tag][data-tag=checkout]").textContent();
  check(checkout.includes('condition failed: page_location contains "/checkout"'), "the not-fired tag says which condition: " + checkout);
  const consent = await page.getByTestId("event").first().textContent();
  check(consent.includes("ad_storage") && consent.includes("denied") && consent.includes("from gcd"), "consent per purpose with its source: " + consent);

  // The newer row is the purchase: every tag fired, and the outgoing request is listed.
  await rows.nth(0).click();
  await page.waitForFunction(() => document.querySelector("[data-testid=tag][data-tag=checkout]")?.dataset.state === "queued", null, { timeout: 5000 });
  const outgoing = await page.getByTestId("outgoing").textContent();
  check(outgoing.includes("ads") && outgoing.includes("/sink") && outgoing.includes("200"), "the vendor exchange: " + outgoing);
  // The container panel: the templates and their queues.
  await page.getByTestId("container").locator("summary").click();
  await page.waitForFunction(() => document.querySelector("#container-body table"), null, { timeout: 5000 });
  const panel = await page.getByTestId("container").textContent();
  check(panel.includes("webhook") && panel.includes("Outboxes") && panel.includes("pending"), "the container panel: " + panel);
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  check(errors.length === 0, "no script errors: " + errors.join("; "));
  console.log("preview UI: session started, 2 hits recorded, blocked and not-fired reasons read, exchange shown");
} finally {
  await browser.close();
}
