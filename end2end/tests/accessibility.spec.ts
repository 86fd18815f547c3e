import {
  test,
  expect,
  createAccount,
  expectAccessible,
  gotoHydrated,
  move,
  signInAsOperator,
  watchConsole,
} from "./fixtures";

// Every page, as axe-core judges it (WCAG 2.1 A and AA): no serious or critical violation. Run
// at the desktop width and, as the "mobile" project, at a phone's (the 700 px layout).

test("the signed-out pages", async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = await watchConsole(page);
  for (const path of ["/sign-in", "/sign-up"]) {
    await gotoHydrated(page, path);
    await expectAccessible(page, path);
  }
  expect(errors).toEqual([]);
  await context.close();
});

test("a customer's pages", async ({ page }) => {
  const accountId = await createAccount(page, "100");
  await move(page, "Deposit", "25");
  await expect(page.getByTestId("balance")).toHaveText("$125.00");
  await expectAccessible(page, "the account page");
  for (const path of ["/", "/tokens", "/security", `/accounts/${accountId}/statement?from=2026-01-01&to=2026-12-31`]) {
    await gotoHydrated(page, path);
    await expectAccessible(page, path);
  }
  await gotoHydrated(page, "/no-such-page");
  await expectAccessible(page, "the page for an unknown address");
});

test("the operations page", async ({ browser }) => {
  const context = await browser.newContext();
  await signInAsOperator(context);
  const page = await context.newPage();
  await gotoHydrated(page, "/operations");
  await expect(page.getByTestId("projections")).toBeVisible();
  await expectAccessible(page, "/operations");
  await context.close();
});
