import { test, expect, gotoHydrated, createAccount, screenshot } from "./fixtures";

test("the accounts page hydrates and validates input in the browser", async ({ page, user }) => {
  await gotoHydrated(page, "/");
  await expect(page.getByRole("heading", { name: "Accounts" })).toBeVisible();
  // A new account is the signed-in user's.
  await expect(page.getByTestId("new-account-owner")).toHaveText(user);
  // Checked by the domain's own parser compiled to WASM: no request is sent.
  await page.getByLabel("Initial balance").fill("10.555");
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByTestId("create-error")).toHaveText(
    "Invalid initial balance: the amount has more than 2 decimal places",
  );
  await expect(page).toHaveURL(/\/$/);
});

test("creating an account opens its page, and the overview lists and ranks the user's accounts", async ({
  page,
  user,
}) => {
  await createAccount(page, "987654.32");
  await expect(page.getByTestId("balance")).toHaveText("$987,654.32");
  await createAccount(page, "12.00");

  await gotoHydrated(page, "/");
  const table = page.getByTestId("accounts-table");
  await expect(table.locator("tbody tr")).toHaveCount(2);
  await expect(table).toContainText(user);
  // Customers see their own accounts only: no filter by owner.
  await expect(page.getByLabel("Filter by owner")).toHaveCount(0);
  await screenshot(page, "accounts");

  // High-value accounts: balance at least the minimum, highest first.
  await page.getByLabel("Minimum balance").fill("100");
  await page.getByRole("button", { name: "High-value" }).click();
  await expect(page).toHaveURL(/min=100/);
  await expect(table.locator("tbody tr")).toHaveCount(1);
  await expect(table.locator("tbody tr").first()).toContainText("$987,654.32");
  await screenshot(page, "high-value-accounts");

  await page.getByRole("link", { name: "Show all" }).click();
  await expect(page.getByTestId("listing-caption")).toHaveText("The newest accounts, 100 a page");
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
