import type { Page } from "@playwright/test";
import { test, expect, createAccount, gotoHydrated, signIn, watchConsole } from "./fixtures";

/** The page's requests: its reads of the read model (polls and refetches, each with its body;
 * not the stream itself), and how many times it asked for the projections' status, which it
 * polls every 2 s live or not (no checkpoint move reports a failure). */
function watchReads(page: Page): { queries: string[]; statuses: number } {
  const seen = { queries: [] as string[], statuses: 0 };
  page.on("request", (request) => {
    if (request.url().includes("/api/queries/")) seen.queries.push(request.postData() ?? "");
    if (request.url().includes("/api/status/read-model-lag")) seen.statuses += 1;
  });
  return seen;
}

/** A consistency token (`"<transaction_id>:<global_position>"`) as numbers, to compare. */
function position(token: string): [number, number] {
  const [transaction, global] = token.split(":").map(Number);
  return [transaction, global];
}

/** Whether one of `bodies` reads the account at `token` or past it: as the page does when the
 * stream announces that the account moved there. A poll reads at the page's own token, which
 * is older (or none). */
function readAtOrPast(bodies: string[], token: string): boolean {
  const [transaction, global] = position(token);
  return bodies.some((body) => {
    const after: unknown = JSON.parse(body || "{}").after;
    if (typeof after !== "string") return false;
    const [t, g] = position(after);
    return t > transaction || (t === transaction && g >= global);
  });
}

test("a change made elsewhere is pushed to an open page, which stops polling while live", async ({
  browser,
  page,
  request,
  user,
}) => {
  // Three status polls, 2 s apart, and what the browsers do around them: room for a busy machine.
  test.setTimeout(120_000);
  const accountId = await createAccount(page, "100");
  const other = await browser.newContext();
  await signIn(other, user);
  const watcher = await other.newPage();
  const errors = await watchConsole(watcher);
  const reads = watchReads(watcher);
  await gotoHydrated(watcher, `/accounts/${accountId}`);
  await expect(watcher.getByTestId("sync-mode")).toHaveText("live");
  // Going live, the page reads what it shows once.
  await expect.poll(() => reads.queries.length).toBeGreaterThan(0);

  // Live, the page does not poll: while it asks for the status three times more (a full poll
  // interval of its own clock at least), it asks nothing of the read model.
  const [asked, statuses] = [reads.queries.length, reads.statuses];
  await expect.poll(() => reads.statuses, { timeout: 30_000 }).toBeGreaterThanOrEqual(statuses + 3);
  expect(reads.queries.slice(asked)).toEqual([]);

  const response = await request.post("/api/commands/deposit", { data: { accountId, amount: 25 } });
  expect(response.status()).toBe(200);
  const { position: deposited } = await response.json();
  // The other browser shows it, read at the position the stream announced.
  await expect(watcher.getByTestId("balance")).toHaveText("$125.00");
  await expect.poll(() => readAtOrPast(reads.queries.slice(asked), deposited)).toBe(true);

  expect(errors).toEqual([]);
  await other.close();
});

test("without the stream the page polls, and goes live again when the stream comes back", async ({ page, request }) => {
  // A refused stream is opened again after 5 s, then 10, 20 and up to 60 while it keeps failing.
  test.setTimeout(120_000);
  // The stream cannot be reached (as while the server restarts, or behind a proxy that drops it).
  await page.route("**/api/live*", (route) => route.abort());
  const reads = watchReads(page);
  const accountId = await createAccount(page, "10");
  await expect(page.getByTestId("sync-mode")).toHaveText("polling");

  const deposited = await request.post("/api/commands/deposit", { data: { accountId, amount: 5 } });
  expect(deposited.status()).toBe(200);
  // Picked up by the next poll.
  await expect(page.getByTestId("balance")).toHaveText("$15.00");

  // The stream is back: the browser reconnects by itself and the page goes live again.
  await page.unroute("**/api/live*");
  await expect(page.getByTestId("sync-mode")).toHaveText("live", { timeout: 90_000 });
  const asked = reads.queries.length;
  const again = await request.post("/api/commands/deposit", { data: { accountId, amount: 5 } });
  expect(again.status()).toBe(200);
  const { position } = await again.json();
  // Shown, read at the position the stream announced.
  await expect(page.getByTestId("balance")).toHaveText("$20.00");
  await expect.poll(() => readAtOrPast(reads.queries.slice(asked), position)).toBe(true);
});
