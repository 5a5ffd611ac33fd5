// The browser storefront (examples/web) in headless Chromium against `npm run mesh`: the
// catalogue renders, an order placed with a token shows its state, and a short-stock refusal shows
// its reason. Connect through Envoy's TLS listener, the page served from an origin the mesh allows
// (SHOP_CORS_ORIGINS). A screenshot of the page goes to test-results/storefront.png.
import { execFileSync } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { serveStorefront } from "../../examples/web/serve.js";
import { repoRoot } from "../../scripts/lib/launcher.js";
import { CERTS, tokenFor } from "../helpers/credentials.js";
import { MeshUnderTest, newProduct, newUser } from "../helpers/front-door.js";
import { startLaunch } from "../helpers/launch.js";

const mesh = new MeshUnderTest();
let storefront: Awaited<ReturnType<typeof serveStorefront>>;
let browser: Browser;
const profile = mkdtempSync(path.join(tmpdir(), "shopmesh-chromium-"));

/** Chromium trusts the edge's certificate by its public key, and nothing else beyond its own. */
function edgeKeyPin(): string {
  const certificate = new X509Certificate(readFileSync(path.join(CERTS, "edge.crt")));
  const spki = certificate.publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

test.before(async () => {
  storefront = await serveStorefront(0);
  mesh.launched = await startLaunch("mesh", {
    replicas: 1,
    env: { SHOP_CORS_ORIGINS: storefront.origin },
  });
  await mesh.waitHealthy(["user", "product", "order"]);
  browser = await puppeteer.launch({
    // Debian's chromium (.ci/run installs it); GitHub's Ubuntu runners ship Google Chrome instead.
    executablePath: execFileSync(
      "sh",
      ["-c", "command -v chromium || command -v chromium-browser || command -v google-chrome"],
      { encoding: "utf8" },
    ).trim(),
    headless: true,
    userDataDir: profile,
    args: [
      // Tests run as root in CI containers, where Chromium's sandbox cannot start.
      "--no-sandbox",
      `--ignore-certificate-errors-spki-list=${edgeKeyPin()}`,
    ],
  });
});

test.after.always(async () => {
  await browser?.close();
  storefront?.server.close();
  await mesh.stop();
  rmSync(profile, { recursive: true, force: true });
});

const text = (page: Page, selector: string) =>
  page.$eval(selector, (element) => element.textContent ?? "");

/** Waits until the page's `#id` reads `expected`; a timeout names what the page said instead. */
async function untilText(page: Page, id: string, expected: string) {
  try {
    await page.waitForFunction(
      `document.getElementById(${JSON.stringify(id)})?.textContent === ${JSON.stringify(expected)}`,
      { timeout: 15_000 },
    );
  } catch (error) {
    const said = await text(page, "#status");
    throw new Error(`#${id} never read ${expected}; the page says: ${said}`, { cause: error });
  }
}

test.serial(
  "the storefront lists products, places an order and shows a short-stock refusal",
  async (t) => {
    const clients = mesh.clients();
    t.teardown(() => clients.close());
    const [user, product] = await Promise.all([newUser(clients), newProduct(clients, 2)]);
    const token = await tokenFor(user.userId);

    const page = await browser.newPage();
    const problems: string[] = [];
    page.on("pageerror", (error) => problems.push(String(error)));
    await page.goto(`${storefront.origin}/?edge=https://localhost:${mesh.envoy.port}`);

    // The catalogue renders, the new product among it.
    const item = `#products li[data-product-id="${product.productId}"]`;
    await page.waitForSelector(item, { timeout: 15_000 });
    t.regex(await text(page, item), /Mesh mug .* €12\.50/);

    // Shown, then ordered with the token: the order's state shows, the stock drops.
    await page.click(`${item} button`);
    await untilText(page, "product-stock", "2");
    await page.type("#token", token);
    await page.click("#order-button");
    await untilText(page, "order-state", "CONFIRMED");
    t.regex(await text(page, "#order-id"), /^ord_/);
    await untilText(page, "product-stock", "1");

    // More than is left: refused, and the page says why.
    await page.$eval("#quantity", (input) => {
      (input as unknown as { value: string }).value = "5";
    });
    await page.click("#order-button");
    await page.waitForSelector("#status.error", { timeout: 15_000 });
    const refusal = await text(page, "#status");
    t.regex(refusal, /^FailedPrecondition \(INSUFFICIENT_STOCK\)/, refusal);
    t.regex(refusal, new RegExp(product.productId), refusal);

    const results = path.join(repoRoot, "test-results");
    mkdirSync(results, { recursive: true });
    const screenshot = path.join(results, "storefront.png");
    await page.screenshot({ path: screenshot, fullPage: true });
    t.log(`screenshot: ${path.relative(repoRoot, screenshot)}`);
    t.deepEqual(problems, []);
  },
);
