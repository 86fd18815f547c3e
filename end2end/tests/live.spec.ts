import type { Page } from "@playwright/test";
import { test, expect, createAccount, gotoHydrated, signIn, watchConsole } from "./fixtures";

/** Counts the page's reads of the read model (polls and refetches; not the stream itself, nor
 * the projections' status, which is polled live or not since no checkpoint move reports it). */
function countQueries(page: Page): { count: number } {
  const seen = { count: 0 };
  page.on("request", (request) => {
    if (request.url().includes("/api/queries/")) seen.count += 1;
  });
  return seen;
}

/** Milliseconds from now until the balance shows `text`, checked on every frame. */
async function msUntilBalance(page: Page, text: string): Promise<number> {
  const started = Date.now();
  await page.waitForFunction(
    (expected) => document.querySelector('[data-testid="balance"]')?.textContent === expected,
    text,
    { polling: "raf", timeout: 5_000 },
  );
  return Date.now() - started;
}

test("a change made elsewhere is pushed to an open page at once, which stops polling while live", async ({
  browser,
  page,
  request,
  user,
}) => {
  const accountId = await createAccount(page, "100");
  const other = await browser.newContext();
  await signIn(other, user);
  const watcher = await other.newPage();
  const errors = watchConsole(watcher);
  await gotoHydrated(watcher, `/accounts/${accountId}`);
  await expect(watcher.getByTestId("sync-mode")).toHaveText("live");
  // Past the one refetch that going live makes.
  await watcher.waitForTimeout(500);

  // Live, the page does not poll: nothing is asked for over more than one poll interval.
  const queries = countQueries(watcher);
  await watcher.waitForTimeout(2_500);
  expect(queries.count).toBe(0);

  const response = await request.post("/api/commands/deposit", { data: { accountId, amount: 25 } });
  expect(response.status()).toBe(200);
  const shownAfter = await msUntilBalance(watcher, "125.00");
  console.log(`deposit answered → shown in the other browser: ${shownAfter} ms`);
  expect(shownAfter).toBeLessThan(500);

  expect(errors).toEqual([]);
  await other.close();
});

test("without the stream the page polls, and goes live again when the stream comes back", async ({ page, request }) => {
  // The stream cannot be reached (as while the server restarts, or behind a proxy that drops it).
  await page.route("**/api/live*", (route) => route.abort());
  const accountId = await createAccount(page, "10");
  await expect(page.getByTestId("sync-mode")).toHaveText("polling");

  const deposited = await request.post("/api/commands/deposit", { data: { accountId, amount: 5 } });
  expect(deposited.status()).toBe(200);
  // Picked up by the next poll.
  await expect(page.getByTestId("balance")).toHaveText("15.00", { timeout: 5_000 });

  // The stream is back: the browser reconnects by itself and the page goes live again.
  await page.unroute("**/api/live*");
  await expect(page.getByTestId("sync-mode")).toHaveText("live", { timeout: 10_000 });
  await page.waitForTimeout(500);
  const again = await request.post("/api/commands/deposit", { data: { accountId, amount: 5 } });
  expect(again.status()).toBe(200);
  expect(await msUntilBalance(page, "20.00")).toBeLessThan(500);
});
