import type { Page } from "@playwright/test";
import {
  test,
  expect,
  createAccount,
  gotoHydrated,
  PASSWORD,
  screenshot,
  signInAsOperator,
  signUp,
  watchConsole,
} from "./fixtures";

/** What a forgotten person's accounts name as their owner (bank::domain::FORGOTTEN). */
const FORGOTTEN = "(forgotten)";

/** Closes the account shown (its balance is zero) through its page's confirmation. */
async function closeAccount(page: Page) {
  const close = page.getByTestId("close-account");
  await close.getByRole("button", { name: "Close account" }).click();
  await close.getByRole("button", { name: "Yes, close it" }).click();
  await expect(page.getByTestId("account-status")).toContainText("Closed");
}

/** Asks, on the security page, to be forgotten, with `password`, and confirms. */
async function askToBeForgotten(page: Page, password: string) {
  await gotoHydrated(page, "/security");
  const form = page.getByTestId("forget-me-form");
  await form.getByLabel("Your password").fill(password);
  await form.getByRole("button", { name: "Forget me", exact: true }).click();
  await form.getByRole("button", { name: "Yes, forget me" }).click();
}

/**
 * On an operator's page, until the account's page names its owner as forgotten: the read
 * models learn of it eventually, so the page is loaded again until they do.
 */
async function seesForgotten(operator: Page, accountId: string) {
  await expect(async () => {
    await gotoHydrated(operator, `/accounts/${accountId}`);
    await expect(operator.getByTestId("account").locator("h1")).toHaveText(FORGOTTEN, { timeout: 2_000 });
  }).toPass({ timeout: 30_000 });
  await expect(operator.getByTestId("account-status")).toContainText("Closed");
}

test("a customer with an open account is refused; once it is closed they are forgotten, and operators see it", async ({
  browser,
  page,
  user,
}) => {
  test.slow(); // two browsers, and the read models catch up with the erasure
  const accountId = await createAccount(page, "0");

  // An open account: refused, with the reason, and the customer stays signed in.
  await askToBeForgotten(page, PASSWORD);
  const form = page.getByTestId("forget-me-form");
  await expect(form.getByRole("alert")).toContainText("still open");
  await expect(page.getByTestId("signed-in-as")).toContainText(user);

  // Closed, but a wrong password: refused too.
  await gotoHydrated(page, `/accounts/${accountId}`);
  await closeAccount(page);
  await askToBeForgotten(page, "not my password");
  await expect(form.getByRole("alert")).toContainText("not your password");
  await expect(page.getByTestId("signed-in-as")).toContainText(user);
  await screenshot(page, "forget-me");

  // Every account closed and the right password: forgotten and signed out.
  await askToBeForgotten(page, PASSWORD);
  await expect(page).toHaveURL(/\/sign-in/);
  await page.goto("/");
  await expect(page).toHaveURL(/\/sign-in/);
  const again = await page.context().request.post("/api/auth/sign-in", { data: { username: user, password: PASSWORD } });
  expect(again.status()).not.toBe(200);

  // An operator sees the account owned by someone forgotten, and counts them.
  const operators = await browser.newContext();
  await signInAsOperator(operators);
  const operator = await operators.newPage();
  const errors = await watchConsole(operator);
  await seesForgotten(operator, accountId);
  await gotoHydrated(operator, "/operations");
  const panel = operator.getByTestId("personal-data");
  await expect(panel.getByTestId("sealed")).toContainText("sealed with a key per person");
  const forgotten = Number((await panel.getByTestId("people-forgotten").textContent())?.replace(/\D/g, ""));
  expect(forgotten).toBeGreaterThanOrEqual(1);
  await screenshot(operator, "operations-personal-data");
  expect(errors).toEqual([]);
  await operators.close();
});

test("an operator forgets a customer whose accounts are closed, with a reason", async ({ browser, page }) => {
  test.slow();
  // The customer, in a browser of their own, with one closed account.
  const customers = await browser.newContext();
  const customer = await signUp(customers, "forgotten");
  const theirs = await customers.newPage();
  const theirErrors = await watchConsole(theirs);
  const accountId = await createAccount(theirs, "0");
  await closeAccount(theirs);

  await signInAsOperator(page.context());
  await gotoHydrated(page, "/operations");
  const panel = page.getByTestId("personal-data");
  const form = panel.getByTestId("forget-user-form");
  const forget = async (username: string) => {
    await form.getByLabel("Customer's username").fill(username);
    await form.getByLabel("Why they are forgotten").fill("their written request");
    await form.getByRole("button", { name: "Forget customer", exact: true }).click();
    await form.getByRole("button", { name: "Yes, forget them" }).click();
  };

  // Nobody by that name: said so.
  await forget(`${customer}-nobody`);
  await expect(form.getByRole("alert")).toContainText("no such user");

  await forget(customer);
  await expect(form.getByTestId("forget-user-done")).toContainText(`${customer} is forgotten: 1 account`);
  await expect(panel.getByTestId("people-forgotten")).not.toHaveText("0");

  // Their browser is signed out.
  await theirs.goto("/");
  await expect(theirs).toHaveURL(/\/sign-in/);
  expect(theirErrors).toEqual([]);
  await customers.close();

  // And the account, seen from the operator's page, is owned by someone forgotten.
  await seesForgotten(page, accountId);
});
