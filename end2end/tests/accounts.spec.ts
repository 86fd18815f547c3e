import { test, expect, gotoHydrated, createAccount, uniqueOwner, screenshot } from "./fixtures";

test("the accounts page hydrates and validates input in the browser", async ({ page }) => {
  await gotoHydrated(page, "/");
  await expect(page.getByRole("heading", { name: "Accounts" })).toBeVisible();
  // Checked by the domain's own parser compiled to WASM: no request is sent.
  await page.getByLabel("Owner", { exact: true }).fill("   ");
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByTestId("create-error")).toHaveText("Invalid owner: the owner must not be empty");
  await page.getByLabel("Owner", { exact: true }).fill("someone");
  await page.getByLabel("Initial balance").fill("10.555");
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByTestId("create-error")).toHaveText(
    "Invalid initial balance: the amount has more than 2 decimal places",
  );
  await expect(page).toHaveURL(/\/$/);
});

test("creating an account opens its page, and the overview lists, filters and ranks accounts", async ({ page }) => {
  const owner = uniqueOwner("rich");
  await createAccount(page, owner, "987654.32");
  await expect(page.getByTestId("balance")).toHaveText("987,654.32");

  await gotoHydrated(page, "/");
  const table = page.getByTestId("accounts-table");
  await expect(table).toContainText(owner);
  await screenshot(page, "accounts");

  // Filter by owner (an address of its own: /?owner=…).
  await page.getByLabel("Filter by owner").fill(owner);
  await page.getByRole("button", { name: "Filter" }).click();
  await expect(page).toHaveURL(new RegExp(`owner=${owner}`));
  await expect(page.getByTestId("listing-caption")).toHaveText(`Accounts of ${owner}`);
  await expect(table.locator("tbody tr")).toHaveCount(1);

  // High-value accounts: balance at least the minimum, highest first.
  await page.getByLabel("Minimum balance").fill("987654.32");
  await page.getByRole("button", { name: "High-value" }).click();
  await expect(page).toHaveURL(/min=987654.32/);
  await expect(table.locator("tbody tr").first()).toContainText(owner);
  const balances = await table.locator("tbody tr td:nth-child(2)").allTextContents();
  const values = balances.map((b) => Number(b.replace(/,/g, "")));
  expect(values.every((v) => v >= 987654.32)).toBe(true);
  expect([...values].sort((a, b) => b - a)).toEqual(values);
  await screenshot(page, "high-value-accounts");

  await page.getByRole("link", { name: "Show all" }).click();
  await expect(page.getByTestId("listing-caption")).toHaveText("The newest 100 accounts");
});

test("the overview is usable at phone width without sideways scrolling", async ({ page }) => {
  await page.setViewportSize({ width: 390, height: 844 });
  await gotoHydrated(page, "/");
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  expect(overflow).toBeLessThanOrEqual(0);
  await screenshot(page, "accounts-phone");
});

test("unknown pages and accounts say so", async ({ page }) => {
  const response = await page.goto("/no/such/page");
  expect(response?.status()).toBe(404);
  await expect(page.getByRole("heading", { name: "Page not found" })).toBeVisible();
  await screenshot(page, "not-found");
  await gotoHydrated(page, "/accounts/00000000-0000-4000-8000-000000000000");
  await expect(page.getByTestId("account-missing")).toContainText("Account not found");
  await screenshot(page, "unknown-account");
});
