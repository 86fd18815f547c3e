import { test, expect, createAccount, gotoHydrated } from "./fixtures";

// A viewer in Berlin whose browser speaks German (the rest of the suite is an en-US viewer in UTC).
test.use({ locale: "de-DE", timezoneId: "Europe/Berlin" });

test("money and times are written as the viewer's browser writes them, with UTC on hover", async ({ page, request }) => {
  // Given an account holding 1,234.50 of the bank's currency,
  const accountId = await createAccount(page, "1234.5");

  // when a viewer in Berlin whose browser speaks German reads it,
  await gotoHydrated(page, `/accounts/${accountId}`);

  // then the balance is written the German way, in dollars,
  await expect(page.getByTestId("balance")).toHaveText(/^1\.234,50\s\$$/);
  // and the creation time is Berlin's, with the UTC time on hover and the exact one for machines;
  const created = page.getByTestId("created-at").locator("time");
  const utc = (await created.getAttribute("title"))!;
  expect(utc).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/);
  const at = new Date(utc.replace(" UTC", "Z").replace(" ", "T"));
  const berlin = new Intl.DateTimeFormat("de-DE", { hour: "2-digit", minute: "2-digit", timeZone: "Europe/Berlin" });
  await expect(created).toContainText(berlin.format(at));
  await expect(created).not.toContainText("UTC");
  expect(new Date((await created.getAttribute("datetime"))!).getTime() - at.getTime()).toBeLessThan(1_000);

  // while the page the server sends, before any browser rewrites it, is the same for everyone.
  const html = await (await request.get(`/accounts/${accountId}`)).text();
  expect(html).toContain("$1,234.50");
  expect(html).toContain(utc);
  expect(html).not.toContain("1.234,50");
});

test("the accounts list writes balances the viewer's way too", async ({ page }) => {
  await createAccount(page, "987654.32");
  await gotoHydrated(page, "/");
  await expect(page.getByTestId("accounts-table").locator("tbody tr").first()).toContainText(/987\.654,32\s\$/);
});
