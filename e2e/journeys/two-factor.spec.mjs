// Two-factor sign-in for a console account (issue 13, point 11): enrolment from the account
// page with a code computed as an authenticator app would (the `otpauth` package), the recovery
// codes shown once, then a sign-in that asks for a code, on a laptop and, with a recovery
// code, on a phone. Its own admin account: the worker's admin must keep signing in without one.
import { TOTP } from 'otpauth';
import { test, expect } from '../support/fixtures.mjs';
import { signIn } from '../support/actions.mjs';
import { PASSWORD } from '../support/tollgate.mjs';

async function signOut(page, step) {
  await page.getByRole('button', { name: 'Sign out' }).first().click();
  await page.waitForLoadState('load');
  await step('signed out');
}

test('an admin turns on two-factor sign-in and signs in with a code, then with a recovery code', async ({ page, step, tollgate }, testInfo) => {
  const email = `twofactor-${testInfo.workerIndex}-${Date.now()}@example.test`;
  tollgate.createAdmin(email);
  await signIn(page, step, tollgate, email);
  await expect(page).toHaveURL(`${tollgate.base}/admin`);
  await step('console before two-factor');

  await page.goto(`${tollgate.base}/account`);
  await step('account page links to two-factor');
  await page.getByRole('link', { name: 'Two-factor sign-in' }).click();
  await expect(page.getByRole('heading', { level: 1, name: 'Two-factor sign-in' })).toBeVisible();
  await step('enrolment');
  const totp = new TOTP({ secret: await page.locator('#secret').inputValue(), digits: 6, period: 30 });
  await page.getByLabel('Your password').fill(PASSWORD);
  await page.getByLabel('Code from the app').fill(totp.generate());
  await page.getByRole('button', { name: 'Turn on two-factor sign-in' }).click();
  const codes = page.locator('ul.recovery-codes code');
  await expect(codes).toHaveCount(10);
  const recovery = await codes.first().innerText();
  await step('recovery codes shown once');

  await signOut(page, step);
  await signIn(page, step, tollgate, email);
  await expect(page).toHaveURL(`${tollgate.base}/login/2fa`);
  await expect(page.getByRole('heading', { level: 1, name: 'Enter your code' })).toBeVisible();
  await step('code step on a laptop');
  // The next step's code: the one used to enrol cannot be used again.
  await page.getByLabel('Code').fill(totp.generate({ timestamp: Date.now() + 30_000 }));
  await page.getByRole('button', { name: 'Verify' }).click();
  await expect(page).toHaveURL(`${tollgate.base}/admin`);
  await step('console after the code');

  await signOut(page, step);
  await page.setViewportSize({ width: 390, height: 844 });
  await signIn(page, step, tollgate, email);
  await expect(page).toHaveURL(`${tollgate.base}/login/2fa`);
  await page.getByLabel('Code').fill('000000');
  await page.getByRole('button', { name: 'Verify' }).click();
  await expect(page.getByRole('alert')).toBeVisible();
  await step('a wrong code on a phone');
  await page.getByLabel('Code').fill(recovery);
  await page.getByRole('button', { name: 'Verify' }).click();
  await expect(page).toHaveURL(`${tollgate.base}/admin`);
  await step('console after a recovery code');
  await page.goto(`${tollgate.base}/account/2fa`);
  await step('two-factor on, on a phone');
});
