// Lighthouse on several pages in one process and one browser: node lighthouse.mjs mobile|desktop URL...
// Prints one JSON object: {url: {scores: {category: score}, cls, lcp, totalByteWeight, failing: [audits]}}.
// The browser is the one CHROME_PATH names (Debian's chromium), started once for every page.
import * as chromeLauncher from "chrome-launcher";
import lighthouse from "lighthouse";
import desktopConfig from "lighthouse/core/config/desktop-config.js";

const [preset, ...urls] = process.argv.slice(2);
if (!["mobile", "desktop"].includes(preset) || urls.length === 0) {
  console.error("usage: node lighthouse.mjs mobile|desktop URL...");
  process.exit(2);
}
// The same quiet, offline browser as the Playwright tests (tests/browser/conftest.py).
const chrome = await chromeLauncher.launch({
  chromePath: process.env.CHROME_PATH,
  chromeFlags: [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const results = {};
try {
  for (const url of urls) {
    const runnerResult = await lighthouse(
      url,
      // A 404 page is audited too (its SEO then fails the http-status-code audit, as it must).
      { port: chrome.port, output: "json", logLevel: "error", ignoreStatusCode: true },
      preset === "desktop" ? desktopConfig : undefined,
    );
    const { categories, audits } = runnerResult.lhr;
    const categoriesOf = (id) => Object.keys(categories).filter((category) =>
      categories[category].auditRefs.some((ref) => ref.id === id && ref.weight > 0));
    const failing = Object.values(audits)
      .filter((audit) => audit.score !== null && audit.score < 0.9 && audit.scoreDisplayMode !== "informative"
        && audit.scoreDisplayMode !== "notApplicable" && audit.scoreDisplayMode !== "manual")
      .map((audit) => ({
        id: audit.id, title: audit.title, displayValue: audit.displayValue ?? "", categories: categoriesOf(audit.id),
      }));
    results[url] = {
      scores: Object.fromEntries(Object.entries(categories).map(([id, category]) => [id, category.score])),
      cls: audits["cumulative-layout-shift"].numericValue ?? null,
      lcp: audits["largest-contentful-paint"].numericValue ?? null,
      totalByteWeight: audits["total-byte-weight"].numericValue ?? null,
      runtimeError: runnerResult.lhr.runtimeError?.message ?? null,
      failing,
    };
  }
} finally {
  await chrome.kill();
}
console.log(JSON.stringify(results, null, 1));
