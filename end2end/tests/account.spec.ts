import { test, expect, createAccount, move, screenshot } from "./fixtures";

test("create, deposit, then an overdraft is refused and the balance stays", async ({ page }) => {
  await createAccount(page, "100");
  const balance = page.getByTestId("balance");
  await expect(balance).toHaveText("$100.00");
  await expect(page.getByTestId("transaction-count")).toHaveText("1");

  // Hold the deposit for a moment so that its pending state can be seen.
  await page.route("**/api/commands/deposit", async (route) => {
    await new Promise((resolve) => setTimeout(resolve, 600));
    await route.continue();
  });
  const depositForm = page.getByTestId("deposit-form");
  await move(page, "Deposit", "50.25");
  const pendingButton = depositForm.getByRole("button", { name: "Processing…" });
  await expect(pendingButton).toBeVisible();
  await expect(pendingButton).toBeDisabled();

  await expect(balance).toHaveText("$150.25");
  await expect(page.getByTestId("total-deposits")).toHaveText("$150.25");
  await expect(page.getByTestId("transaction-count")).toHaveText("2");
  await expect(depositForm.getByRole("button", { name: "Deposit" })).toBeEnabled();

  await move(page, "Withdraw", "1000");
  await expect(page.getByTestId("withdraw-error")).toHaveText(
    "Insufficient funds: balance 150.25, withdrawal 1000.00",
  );
  // Past at least one poll of the read model, nothing has changed.
  await page.waitForTimeout(2_500);
  await expect(balance).toHaveText("$150.25");
  await expect(page.getByTestId("transaction-count")).toHaveText("2");
  await expect(page.getByTestId("total-withdrawals")).toHaveText("$0.00");

  await move(page, "Withdraw", "0.25");
  await expect(balance).toHaveText("$150.00");
  await expect(page.getByTestId("withdraw-error")).toHaveText("");
  await screenshot(page, "account");
});

test("amounts are checked in the browser before any request", async ({ page }) => {
  await createAccount(page, "10");
  let sent = 0;
  await page.route("**/api/commands/**", async (route) => {
    sent += 1;
    await route.continue();
  });
  for (const [amount, message] of [
    ["0", "Invalid amount: the amount must be greater than zero"],
    ["-5", "Invalid amount: the amount must be greater than zero"],
    ["1.234", "Invalid amount: the amount has more than 2 decimal places"],
    ["ten", 'Invalid amount: "ten" is not a number'],
    ["2000000000", "Invalid amount: the amount is larger than the limit of 1,000,000,000.00"],
  ]) {
    await move(page, "Deposit", amount);
    await expect(page.getByTestId("deposit-error")).toHaveText(message);
  }
  expect(sent).toBe(0);
});

test("the badge says syncing until the read model passes the command, then synced", async ({ page }) => {
  await createAccount(page, "1");
  const badge = page.getByTestId("sync-badge");
  await expect(badge).toContainText("synced");
  await expect(badge).toContainText(/as of #\d+:\d+/);
  await expect(page.getByTestId("lag")).toContainText("read model lag:");
  // Slow the read side down so that the gap between command and read model is visible.
  await page.route("**/api/queries/account", async (route) => {
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await route.continue();
  });
  await move(page, "Deposit", "2");
  await expect(badge).toContainText("syncing…");
  await expect(badge).toHaveClass(/syncing/);
  await expect(badge).toContainText("synced", { timeout: 10_000 });
  await expect(badge).not.toHaveClass(/syncing/);
  await expect(page.getByTestId("balance")).toHaveText("$3.00");
});

test("the badge says which read store answered, and Redis answers once it has the account", async ({ page }) => {
  await createAccount(page, "5");
  const store = page.getByTestId("read-store");
  await expect(store).toHaveText(/^from (Redis|Postgres)$/);
  // scripts/test runs the e2e server with a Redis: a fresh load reads it once Redis has
  // projected the account (a read right after a command may still come from Postgres).
  await expect(async () => {
    await page.reload();
    await expect(store).toHaveText("from Redis", { timeout: 1_000 });
  }).toPass({ timeout: 15_000 });
  await expect(page.getByTestId("balance")).toHaveText("$5.00");
});

test("a double-click on deposit deposits once", async ({ page }) => {
  await createAccount(page, "10");
  await page.route("**/api/commands/deposit", async (route) => {
    await new Promise((resolve) => setTimeout(resolve, 300));
    await route.continue();
  });
  const form = page.getByTestId("deposit-form");
  await form.getByLabel("Deposit amount").fill("5");
  await form.getByRole("button", { name: "Deposit" }).dblclick();
  await expect(page.getByTestId("balance")).toHaveText("$15.00");
  await page.waitForTimeout(2_500);
  await expect(page.getByTestId("balance")).toHaveText("$15.00");
  await expect(page.getByTestId("transaction-count")).toHaveText("2");
});

test("the deposit form works from the keyboard", async ({ page }) => {
  await createAccount(page, "1");
  await page.getByLabel("Deposit amount").focus();
  await page.keyboard.type("4");
  await page.keyboard.press("Enter");
  await expect(page.getByTestId("balance")).toHaveText("$5.00");
});

test("time travel shows the account as it was, clearly marked, then comes back", async ({ page }) => {
  await createAccount(page, "100");
  // The page shows times in the viewer's zone; hovering one shows it in UTC, as the form wants it.
  const created = (await page.getByTestId("created-at").locator("time").getAttribute("title"))!;
  await page.waitForTimeout(1_100);
  await move(page, "Deposit", "50");
  await expect(page.getByTestId("balance")).toHaveText("$150.00");
  await move(page, "Withdraw", "30");
  await expect(page.getByTestId("balance")).toHaveText("$120.00");

  const slider = page.getByLabel(/^Version/);
  await slider.fill("1");
  await expect(page.getByTestId("historical-banner")).toContainText("version 1 of 3");
  await expect(page.getByTestId("balance")).toHaveText("$100.00");
  await expect(page.getByTestId("transaction-count")).toHaveText("1");
  await expect(page.getByTestId("account")).toHaveClass(/historical/);
  await screenshot(page, "time-travel");
  await slider.fill("2");
  await expect(page.getByTestId("balance")).toHaveText("$150.00");
  await expect(page.getByTestId("total-deposits")).toHaveText("$150.00");

  // A moment: the creation time exactly as the page gives it, to the second. It means the end of
  // that second, so it includes the creation (recorded a fraction into it) and not the deposit,
  // made more than a second later.
  const [date, clock] = created.replace(" UTC", "").split(" ");
  await page.getByLabel("Moment (UTC)").fill(`${date}T${clock}`);
  await page.getByRole("button", { name: "Show then" }).click();
  await expect(page.getByTestId("historical-banner")).toContainText("version 1 of 3");
  await expect(page.getByTestId("balance")).toHaveText("$100.00");

  await page.getByTestId("time-travel").getByRole("button", { name: "Back to now" }).click();
  await expect(page.getByTestId("historical-banner")).toHaveCount(0);
  await expect(page.getByTestId("balance")).toHaveText("$120.00");
});

test("the audit trail and the balance chart show every movement", async ({ page }) => {
  await createAccount(page, "10");
  for (const amount of ["1", "2", "3"]) {
    await move(page, "Deposit", amount);
  }
  await expect(page.getByTestId("transaction-count")).toHaveText("4");
  await move(page, "Withdraw", "6");
  await expect(page.getByTestId("balance")).toHaveText("$10.00");

  const rows = page.getByTestId("audit-trail").locator("tbody tr");
  await expect(rows).toHaveCount(5);
  await expect(rows.first()).toContainText("MoneyWithdrawn");
  await expect(rows.first().locator("td").nth(3)).toHaveText("$10.00");
  await expect(rows.last()).toContainText("AccountCreated");
  await expect(rows.first().locator("code").first()).toHaveText(/^[0-9a-f]{8}$/);

  const chart = page.getByTestId("balance-chart");
  await expect(chart.locator("circle.deposit")).toHaveCount(3);
  await expect(chart.locator("circle.withdrawal")).toHaveCount(1);
  await expect(chart.locator("circle.opening")).toHaveCount(1);
  await screenshot(page, "account-history");
});

test("the audit trail pages through a long history", async ({ page, request }) => {
  const accountId = await createAccount(page, "0");
  for (let i = 1; i <= 14; i += 1) {
    const response = await request.post("/api/commands/deposit", { data: { accountId, amount: 1 } });
    expect(response.status()).toBe(200);
  }
  const rows = page.getByTestId("audit-trail").locator("tbody tr");
  await expect(rows.first().locator("td").first()).toHaveText("15", { timeout: 8_000 });
  await expect(rows).toHaveCount(10);
  await page.getByRole("button", { name: "Older →" }).click();
  await expect(rows).toHaveCount(5);
  await expect(rows.last()).toContainText("AccountCreated");
  await expect(page.getByRole("button", { name: "Older →" })).toBeDisabled();
  await page.getByRole("button", { name: "← Newer" }).click();
  await expect(rows.first().locator("td").first()).toHaveText("15");
});

test("the page does not shift while it polls", async ({ page }) => {
  await createAccount(page, "5");
  const before = await page.getByTestId("deposit-form").boundingBox();
  await page.waitForTimeout(4_500);
  const after = await page.getByTestId("deposit-form").boundingBox();
  expect(after).toEqual(before);
});

test("the account page is usable at phone width", async ({ page }) => {
  await page.setViewportSize({ width: 390, height: 844 });
  await createAccount(page, "5");
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  expect(overflow).toBeLessThanOrEqual(0);
  await screenshot(page, "account-phone");
});
