import { request as playwrightRequest } from "@playwright/test";
import {
  test,
  expect,
  createAccount,
  gotoHydrated,
  move,
  PASSWORD,
  screenshot,
  signInAsOperator,
  signUp,
  uniqueOwner,
  watchConsole,
} from "./fixtures";

test("a new user signs up, banks, signs out, and is sent back where they were after signing in", async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = await watchConsole(page);

  // Signed out, any page leads to sign-in.
  await page.goto("/");
  await expect(page).toHaveURL(/\/sign-in\?next=\/$/);
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  await screenshot(page, "sign-in");
  await page.getByRole("link", { name: "Create a user" }).click();
  await expect(page).toHaveURL(/\/sign-up/);
  const username = uniqueOwner("new");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill("short");
  await page.getByRole("button", { name: "Sign up" }).click();
  await expect(page.getByTestId("credentials-error")).toContainText("at least 8 characters");
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign up" }).click();
  await expect(page.getByTestId("signed-in-as")).toContainText(username);

  const accountId = await createAccount(page, "50");
  await move(page, "Deposit", "25");
  await expect(page.getByTestId("balance")).toHaveText("$75.00");

  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page).toHaveURL(/\/sign-in/);
  // The account's address, signed out: sign in first, then back to it.
  await page.goto(`/accounts/${accountId}`);
  await expect(page).toHaveURL(new RegExp(`/sign-in\\?next=/accounts/${accountId}`));
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill("not the password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByTestId("credentials-error")).toHaveText("wrong username or password");
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page).toHaveURL(new RegExp(`/accounts/${accountId}$`));
  await expect(page.getByTestId("balance")).toHaveText("$75.00");

  expect(errors).toEqual([]);
  await context.close();
});

test("two users cannot see or move each other's accounts, by address either", async ({ browser, page }) => {
  const accountId = await createAccount(page, "100");
  const other = await browser.newContext();
  const stranger = await signUp(other, "stranger");
  const theirs = await other.newPage();
  const errors = await watchConsole(theirs);

  await gotoHydrated(theirs, `/accounts/${accountId}`);
  await expect(theirs.getByTestId("account-missing")).toContainText("Account not found");
  await gotoHydrated(theirs, "/");
  await expect(theirs.getByTestId("signed-in-as")).toContainText(stranger);
  await expect(theirs.getByTestId("no-accounts")).toBeVisible();
  const moved = await other.request.post("/api/commands/withdraw", { data: { accountId, amount: 100 } });
  expect(moved.status()).toBe(404);

  // The owner's balance is untouched.
  await page.reload();
  await expect(page.getByTestId("balance")).toHaveText("$100.00");
  expect(errors).toEqual([]);
  await other.close();
});

test("operations are the operator's: customers neither see the link nor get the page", async ({ browser, page }) => {
  await gotoHydrated(page, "/");
  await expect(page.getByRole("link", { name: "Operations" })).toHaveCount(0);
  await gotoHydrated(page, "/operations");
  await expect(page.getByRole("alert").first()).toContainText("only operators may do this");

  const operators = await browser.newContext();
  await signInAsOperator(operators);
  const operator = await operators.newPage();
  const errors = await watchConsole(operator);
  await gotoHydrated(operator, "/");
  await expect(operator.getByText("operator", { exact: true })).toBeVisible();
  await operator.getByRole("link", { name: "Operations" }).click();
  await expect(operator.getByTestId("projection-account_summary")).toHaveAttribute("data-state", "running");
  expect(errors).toEqual([]);
  await operators.close();
});

test("an API token made on the tokens page drives the API until it is revoked", async ({ page, baseURL }) => {
  const accountId = await createAccount(page, "10");
  await gotoHydrated(page, "/tokens");
  await page.getByLabel("Name").fill("my script");
  // The password is asked again: a token outlasts the session that makes it.
  await page.getByLabel("Your password").fill("not the password");
  await page.getByRole("button", { name: "Create token" }).click();
  await expect(page.getByTestId("create-token-form").getByRole("alert")).toContainText("not your password");
  await page.getByLabel("Your password").fill(PASSWORD);
  await page.getByRole("button", { name: "Create token" }).click();
  const token = (await page.getByTestId("new-token").locator("code").textContent()) ?? "";
  expect(token).toMatch(/^cqb_/);
  await screenshot(page, "tokens");

  // A client with no cookies, only the token, on the contract's routes.
  const client = await playwrightRequest.newContext({
    baseURL,
    extraHTTPHeaders: { authorization: `Bearer ${token}` },
  });
  const deposited = await client.post("/api/commands/deposit", { data: { accountId, amount: 5 } });
  expect(deposited.status()).toBe(200);

  await page.reload();
  const row = page.getByTestId("tokens-table").locator("tr", { hasText: "my script" });
  await expect(row).not.toContainText("never");
  await row.getByRole("button", { name: "Revoke" }).click();
  await row.getByRole("button", { name: "Yes, revoke it" }).click();
  await expect(row).toContainText("revoked");
  const refused = await client.post("/api/commands/deposit", { data: { accountId, amount: 5 } });
  expect(refused.status()).toBe(401);
  await client.dispose();
});
