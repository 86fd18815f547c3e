import { test, expect, gotoHydrated, PASSWORD, screenshot, signIn } from "./fixtures";

const NEW_PASSWORD = "a brand new passphrase";

test("a user sees their sessions, ends one, changes their password and signs out everywhere", async ({
  browser,
  page,
  user,
}) => {
  // Given the user signed in in a second browser too,
  const other = await browser.newContext();
  await signIn(other, user);
  const elsewhere = await other.newPage();
  await gotoHydrated(elsewhere, "/");
  await expect(elsewhere.getByTestId("signed-in-as")).toContainText(user);

  // the security page lists both sessions, this one marked;
  await gotoHydrated(page, "/");
  await page.getByRole("link", { name: "Security" }).click();
  await expect(page).toHaveURL(/\/security$/);
  await expect(page.getByTestId("session-row")).toHaveCount(2);
  await expect(page.getByTestId("this-session")).toHaveCount(1);
  await screenshot(page, "security");

  // ending the other one signs that browser out;
  await page.getByTestId("sessions-table").getByRole("button", { name: "End" }).click();
  await expect(page.getByTestId("session-row")).toHaveCount(1);
  await elsewhere.reload();
  await expect(elsewhere).toHaveURL(/\/sign-in/);

  // signed in there again, a password change here signs it out once more, and this browser
  // goes on;
  await signIn(other, user);
  await gotoHydrated(elsewhere, "/");
  await expect(elsewhere.getByTestId("signed-in-as")).toContainText(user);
  await page.getByLabel("Current password").fill("not my password");
  await page.getByLabel("New password").fill(NEW_PASSWORD);
  await page.getByRole("button", { name: "Change password" }).click();
  await expect(page.getByTestId("change-password-form").getByRole("alert")).toContainText("not your password");
  await page.getByLabel("Current password").fill(PASSWORD);
  await page.getByRole("button", { name: "Change password" }).click();
  await expect(page.getByTestId("password-changed")).toBeVisible();
  await elsewhere.reload();
  await expect(elsewhere).toHaveURL(/\/sign-in/);
  await gotoHydrated(page, "/");
  await expect(page.getByTestId("signed-in-as")).toContainText(user);

  // and "sign out everywhere" signs this one out too.
  await gotoHydrated(page, "/security");
  await page.getByTestId("sign-out-everywhere").click();
  await expect(page).toHaveURL(/\/sign-in/);
  await page.goto("/");
  await expect(page).toHaveURL(/\/sign-in/);
  await other.close();
});
