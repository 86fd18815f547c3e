import { test, expect, accountIdOf, createAccount, gotoHydrated, move } from "./fixtures";

test("before the page is interactive its command buttons cannot be clicked", async ({ page, context }) => {
  const accountId = await createAccount(page, "10");
  // Given the account page without its WebAssembly (a slow network, say), as the server
  // rendered it (in a page of its own: the aborted download is an error there),
  const bare = await context.newPage();
  await bare.route("**/*.wasm", (route) => route.abort());
  await bare.goto(`/accounts/${accountId}`);
  await expect(bare.getByTestId("deposit-form")).toBeVisible();
  // then its command buttons are disabled: a click cannot submit the plain form instead.
  await expect(bare.getByTestId("deposit-form").getByRole("button", { name: "Deposit" })).toBeDisabled();
  await expect(bare.getByTestId("transfer-form").getByRole("button", { name: "Transfer" })).toBeDisabled();
  await expect(bare.locator("body")).not.toHaveAttribute("data-hydrated", "true");
  await bare.close();
});

test("an error is said next to its field, which names it", async ({ page }) => {
  await createAccount(page, "10");
  await move(page, "Withdraw", "1000");
  const field = page.getByLabel("Withdraw amount");
  await expect(field).toHaveAttribute("aria-invalid", "true");
  await expect(field).toHaveAccessibleDescription("Insufficient funds: balance 10.00, withdrawal 1000.00");
});

test("a skip link leads the keyboard past the header to the page", async ({ page }) => {
  await createAccount(page, "10");
  await gotoHydrated(page, `/accounts/${accountIdOf(page)}`);
  await page.keyboard.press("Tab");
  const skip = page.getByRole("link", { name: "Skip to content" });
  await expect(skip).toBeFocused();
  await page.keyboard.press("Enter");
  await expect(page.locator("main")).toBeFocused();
});

test("the balance chart has a time axis and each point can be focused and read", async ({ page }) => {
  await createAccount(page, "100");
  await move(page, "Deposit", "25");
  await expect(page.getByTestId("balance")).toHaveText("$125.00");
  const chart = page.getByTestId("balance-chart");
  await expect(chart.locator(".mark")).toHaveCount(2);
  await expect(chart.getByTestId("time-axis-start")).toContainText("UTC");
  await chart.locator(".mark").last().focus();
  await expect(chart.getByTestId("chart-point")).toContainText("deposit $25.00 → balance $125.00");
});
