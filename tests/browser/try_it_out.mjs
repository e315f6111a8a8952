// Swagger UI as a person uses it: open /docs, press "Authorize" and enter a
// key, open POST /analytics/query, press "Try it out" and "Execute", and read
// the response code from the page. Drives the system Chromium through
// playwright-core (no browser download).
//
//   node try_it_out.mjs <base url> <token> [scheme]
//
// scheme is the security scheme to fill in: tenant_key (default) or
// admin_token. CHROMIUM overrides the browser (default /usr/bin/chromium).
// Prints "status <code>" and exits 0 when the code is 200.

import { chromium } from "playwright-core";

const [base, token, scheme = "tenant_key"] = process.argv.slice(2);
if (!base || !token) {
  console.error("usage: node try_it_out.mjs <base url> <token> [tenant_key|admin_token]");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let code = 1;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.setDefaultTimeout(30_000);
  page.on("pageerror", (error) => console.error(`page error: ${error}`));

  await page.goto(`${base}/docs/`);
  await page.locator(".opblock").first().waitFor();

  // Authorize: fill the bearer value of one scheme, press its Authorize.
  await page.locator(".auth-wrapper button.authorize").click();
  const container = page.locator(".auth-container").filter({ hasText: scheme });
  await container.locator("input").first().fill(token);
  await container.locator("button.authorize").click();
  await page.locator(".modal-ux button.close-modal").click();

  // POST /analytics/query: open it, Try it out, Execute.
  const operation = page.locator("#operations-query-run_query");
  await operation.locator(".opblock-summary").first().click();
  await operation.locator("button.try-out__btn").click();
  const body = await operation.locator("textarea.body-param__text").inputValue();
  console.log(`request body: ${body.replace(/\s+/g, " ")}`);
  await operation.locator("button.execute").click();

  const status = operation.locator(".live-responses-table .response .response-col_status").first();
  await status.waitFor();
  const text = (await status.innerText()).trim();
  const answer = await operation
    .locator(".live-responses-table .response-col_description pre")
    .first()
    .innerText()
    .catch(() => "");
  console.log(`status ${text}`);
  console.log(`response: ${answer.slice(0, 400).replace(/\s+/g, " ")}`);
  if (process.env.SCREENSHOT) {
    await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  }
  code = text.startsWith("200") ? 0 : 1;
} catch (error) {
  console.error(`failed: ${error.stack || error}`);
} finally {
  await browser.close();
}
process.exit(code);
