import { test, expect, createAccount, gotoHydrated, move, signIn, watchConsole } from "./fixtures";

test("two browsers on one account see each other's changes within seconds", async ({ browser, page, user }) => {
  const accountId = await createAccount(page, "100");
  // The same user, signed in on another device.
  const other = await browser.newContext();
  await signIn(other, user);
  const otherPage = await other.newPage();
  const otherErrors = await watchConsole(otherPage);
  await gotoHydrated(otherPage, `/accounts/${accountId}`);
  await expect(otherPage.getByTestId("balance")).toHaveText("$100.00");

  await move(page, "Deposit", "25");
  await expect(page.getByTestId("balance")).toHaveText("$125.00");
  // The other browser learns of it by polling the read model, without reloading.
  await expect(otherPage.getByTestId("balance")).toHaveText("$125.00", { timeout: 5_000 });

  await move(otherPage, "Withdraw", "100");
  await expect(otherPage.getByTestId("balance")).toHaveText("$25.00");
  await expect(page.getByTestId("balance")).toHaveText("$25.00", { timeout: 5_000 });
  // A withdrawal the balance no longer covers is refused in the first browser.
  await move(page, "Withdraw", "50");
  await expect(page.getByTestId("withdraw-error")).toHaveText("Insufficient funds: balance 25.00, withdrawal 50.00");
  await expect(page.getByTestId("balance")).toHaveText("$25.00");

  expect(otherErrors).toEqual([]);
  await other.close();
});

test("a command sent by another client shows up without a reload", async ({ page, request }) => {
  const accountId = await createAccount(page, "5");
  const response = await request.post("/api/commands/deposit", { data: { accountId, amount: 7.5 } });
  expect(response.status()).toBe(200);
  await expect(page.getByTestId("balance")).toHaveText("$12.50", { timeout: 8_000 });
});
