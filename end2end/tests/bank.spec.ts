import { test, expect, gotoHydrated, createAccount, uniqueOwner } from "./fixtures";

test("the accounts page hydrates and validates input in the browser", async ({ page }) => {
  await gotoHydrated(page, "/");
  await expect(page.getByRole("heading", { name: "Accounts" })).toBeVisible();
  // Checked by the domain's own parser compiled to WASM: no request is sent.
  await page.getByLabel("Owner").fill("   ");
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByTestId("create-error")).toHaveText("Invalid owner: the owner must not be empty");
  await page.getByLabel("Owner").fill("someone");
  await page.getByLabel("Initial balance").fill("10.555");
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByTestId("create-error")).toHaveText(
    "Invalid initial balance: the amount has more than 2 decimal places",
  );
  await expect(page).toHaveURL(/\/$/);
});

test("create, deposit, then an overdraft is refused and the balance stays", async ({ page }) => {
  const owner = uniqueOwner("e2e");
  await createAccount(page, owner, "100");
  const balance = page.getByTestId("balance");
  await expect(balance).toHaveText("100.00");
  await expect(page.getByTestId("transaction-count")).toHaveText("1");

  // Hold the deposit for a moment so that its pending state can be seen.
  await page.route("**/api/commands/deposit", async (route) => {
    await new Promise((resolve) => setTimeout(resolve, 600));
    await route.continue();
  });
  const depositForm = page.getByTestId("deposit-form");
  await depositForm.getByLabel("Deposit amount").fill("50.25");
  await depositForm.getByRole("button", { name: "Deposit" }).click();
  const pendingButton = depositForm.getByRole("button", { name: "Processing…" });
  await expect(pendingButton).toBeVisible();
  await expect(pendingButton).toBeDisabled();

  await expect(balance).toHaveText("150.25");
  await expect(page.getByTestId("total-deposits")).toHaveText("150.25");
  await expect(page.getByTestId("transaction-count")).toHaveText("2");
  await expect(depositForm.getByRole("button", { name: "Deposit" })).toBeEnabled();

  const withdrawForm = page.getByTestId("withdraw-form");
  await withdrawForm.getByLabel("Withdraw amount").fill("1000");
  await withdrawForm.getByRole("button", { name: "Withdraw" }).click();
  await expect(page.getByTestId("withdraw-error")).toHaveText(
    "Insufficient funds: balance 150.25, withdrawal 1000.00",
  );
  // Past at least one poll of the read model, nothing has changed.
  await page.waitForTimeout(2_500);
  await expect(balance).toHaveText("150.25");
  await expect(page.getByTestId("transaction-count")).toHaveText("2");
  await expect(page.getByTestId("total-withdrawals")).toHaveText("0.00");

  await withdrawForm.getByLabel("Withdraw amount").fill("0.25");
  await withdrawForm.getByRole("button", { name: "Withdraw" }).click();
  await expect(balance).toHaveText("150.00");
  await expect(page.getByTestId("withdraw-error")).toHaveText("");
  await expect(page.getByTestId("sync-badge")).toContainText("synced");
});

test("the balance follows commands sent by someone else", async ({ page, request }) => {
  const owner = uniqueOwner("poll");
  await createAccount(page, owner, "5");
  const accountId = page.url().split("/accounts/")[1].split("?")[0];
  const response = await request.post("/api/commands/deposit", { data: { accountId, amount: 7.5 } });
  expect(response.status()).toBe(200);
  // No reload: the page polls the read model every 2 s.
  await expect(page.getByTestId("balance")).toHaveText("12.50", { timeout: 8_000 });
});

test("unknown pages and accounts say so", async ({ page }) => {
  await page.goto("/no/such/page");
  await expect(page.getByRole("heading", { name: "Page not found" })).toBeVisible();
  await gotoHydrated(page, "/accounts/00000000-0000-4000-8000-000000000000");
  await expect(page.getByTestId("account-missing")).toContainText("Account not found");
});
