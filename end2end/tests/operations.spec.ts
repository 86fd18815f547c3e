import pg from "pg";
import { randomUUID } from "node:crypto";
import { test, expect, gotoHydrated, createAccount, move, screenshot, signInAsOperator } from "./fixtures";

// Serial: the poison test stops the projections for a moment.
test.describe.configure({ mode: "serial" });

// The operations page is the operator's.
test.beforeEach(async ({ page }) => {
  await signInAsOperator(page.context());
});

test("every projection's status is shown, refreshed live", async ({ page }) => {
  await gotoHydrated(page, "/operations");
  for (const name of ["account_summary", "account_ledger"]) {
    const card = page.getByTestId(`projection-${name}`);
    await expect(card).toBeVisible();
    await expect(card).toHaveAttribute("data-state", "running");
    await expect(card).toContainText("Checkpoint");
    await expect(card).toContainText("Head");
  }
  await screenshot(page, "operations");
});

test("a rebuild runs from the start while the live tables serve, then the projection runs again", async ({ page }) => {
  await createAccount(page, "42");
  await gotoHydrated(page, "/operations");
  const card = page.getByTestId("projection-account_ledger");
  await page.getByLabel("Reason for the next lever").fill("checking the rebuild");
  await card.getByRole("button", { name: "Rebuild" }).click();
  // Rebuilding (with its progress bar) or, on a small store, already done.
  await expect(card).toHaveAttribute("data-state", /rebuilding|running/);
  await expect(card).toHaveAttribute("data-state", "running", { timeout: 15_000 });
  await expect(card.getByTestId("projection-error")).toHaveCount(0);
  await expect(card.getByRole("button", { name: "Rebuild" })).toBeEnabled();
});

test("a poison event stops the projections; the operator skips it and they run again", async ({ page }) => {
  const accountId = await createAccount(page, "10");
  const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
  await client.connect();
  try {
    // An event no projection can read, as a buggy writer might store it.
    await client.query(
      `INSERT INTO events (event_id, stream_type, stream_id, stream_version, event_type, schema_version, data)
       VALUES ($1, 'account', $2, 1, 'MoneyDeposited', 2, '{"amount": "lots"}')`,
      [randomUUID(), randomUUID()],
    );
  } finally {
    await client.end();
  }

  await gotoHydrated(page, "/operations");
  // Every projection that reads deposits stops at it: the Postgres ones and the Redis store
  // (left stopped, it would fail every later test that reads Redis).
  const stopped = ["account_summary", "account_ledger", "redis_accounts"];
  for (const name of stopped) {
    const card = page.getByTestId(`projection-${name}`);
    await expect(card).toHaveAttribute("data-state", "failed", { timeout: 10_000 });
    await expect(card.getByTestId("projection-error")).toContainText("MoneyDeposited");
    await expect(card.getByRole("button", { name: "Rebuild" })).toBeDisabled();
  }
  await screenshot(page, "operations-failed");

  // Retry without a fix: it fails again on the same event.
  const summary = page.getByTestId("projection-account_summary");
  await page.getByLabel("Reason for the next lever").fill("retrying before the fix");
  await summary.getByRole("button", { name: "Retry" }).click();
  await expect(summary).toHaveAttribute("data-state", "failed", { timeout: 10_000 });

  for (const name of stopped) {
    const card = page.getByTestId(`projection-${name}`);
    await page.getByLabel("Reason for the next lever").fill("the poison event is garbage");
    await card.getByRole("button", { name: "Skip failing event" }).click();
    await card.getByRole("button", { name: "Yes, skip it" }).click();
    await expect(card).toHaveAttribute("data-state", "running", { timeout: 10_000 });
  }

  // Each lever is recorded with who pulled it and why.
  await expect(page.getByTestId("levers")).toContainText("the poison event is garbage");
  await expect(page.getByTestId("levers")).toContainText(process.env.E2E_OPERATOR ?? "");

  // Commands kept working all along, and the read model catches up.
  await gotoHydrated(page, `/accounts/${accountId}`);
  await move(page, "Deposit", "5");
  await expect(page.getByTestId("balance")).toHaveText("$15.00");
});
