// The pricing page as a visitor meets it: feature lines in words, a Monthly/Yearly switch made
// of CSS alone, and a plan chosen before signing up carried all the way to its checkout.
import { test, expect } from '../support/fixtures.mjs';
import { signUp, pay, subscriptionPanel } from '../support/actions.mjs';

test('a visitor switches to yearly prices, and the plan chosen before signing up is the one paid for', async ({ page, step, tollgate }) => {
  await page.goto(`${tollgate.base}/pricing`);
  const pro = page.locator('article', { has: page.getByRole('heading', { name: 'Pro' }) });
  await expect(pro.getByText('Most popular')).toBeVisible();
  await expect(pro.getByText('Unlimited agents')).toBeVisible();
  await expect(page.getByText('agents:unlimited')).toHaveCount(0);
  await expect(pro.getByText('$29.00 / month')).toBeVisible();
  await step('pricing, monthly');

  await page.getByText('Yearly', { exact: true }).click();
  await expect(pro.getByText('$29.00 / month')).toBeHidden();
  await expect(pro.getByText(/\$290\.00 \/ year/)).toBeVisible();
  await step('pricing, yearly');

  await pro.getByRole('link', { name: /Create an account to subscribe/ }).click();
  await expect(page.getByText(/You chose/)).toContainText('Pro');
  await signUp(page, step, tollgate, { from: null });
  await expect(page.getByRole('heading', { name: 'Confirm your plan' })).toBeVisible();
  await expect(page.getByText(/\$290\.00 \/ year/)).toBeVisible();
  await step('confirm the yearly Pro plan');
  await page.getByRole('button', { name: 'Continue to payment' }).click();
  await expect(page.getByText(/\$290\.00/).first()).toBeVisible();
  await pay(page, step, '4242 4242 4242 4242');
  await step('checkout success');
  const panel = await subscriptionPanel(page, tollgate);
  await expect(panel.getByText('Pro', { exact: true })).toBeVisible();
  await expect(panel.getByText('active', { exact: true })).toBeVisible();
  await step('account with yearly Pro');
});
