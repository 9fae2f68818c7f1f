// A customer's whole subscription, in the browser: sign up, pay, switch in the Billing Portal,
// cancel at period end and resume; and a declined card.
import { test, expect } from '../support/fixtures.mjs';
import { signUp, signIn, choosePlan, pay, subscriptionPanel } from '../support/actions.mjs';

test('sign up, choose Pro, pay with 4242, and the account shows the plan active', async ({ page, step, tollgate }) => {
  await signUp(page, step, tollgate);
  await expect(page.getByText('Your account is ready')).toBeVisible();
  await step('account after sign-up');
  await choosePlan(page, step, tollgate, 'Pro');
  await pay(page, step, '4242 4242 4242 4242');
  await expect(page.getByText(/Pro/).first()).toBeVisible();
  await step('checkout success');
  const panel = await subscriptionPanel(page, tollgate);
  await expect(panel.getByText('Pro', { exact: true })).toBeVisible();
  await expect(panel.getByText('active', { exact: true })).toBeVisible();
  await step('account with Pro active');
});

test('a declined card shows the decline and creates nothing', async ({ page, step, tollgate }) => {
  await signUp(page, step, tollgate);
  await step('account after sign-up');
  await choosePlan(page, step, tollgate, 'Starter');
  await pay(page, step, '4000 0000 0000 0002');
  await expect(page.getByRole('alert')).toContainText(/declined/i);
  await step('checkout declined');
  const panel = await subscriptionPanel(page, tollgate);
  await expect(panel.getByText(/no subscription yet/i)).toBeVisible();
  await step('account without a subscription');
});

test('a plan switched in the Billing Portal shows on the account and pricing pages', async ({ page, step, tollgate }) => {
  await signUp(page, step, tollgate);
  await step('account after sign-up');
  await choosePlan(page, step, tollgate, 'Starter');
  await pay(page, step, '4242 4242 4242 4242');
  await step('checkout success');
  await page.goto(`${tollgate.base}/account`);
  await step('account with Starter');
  await page.getByRole('button', { name: 'Manage billing' }).click();
  await expect(page.getByRole('heading', { level: 1 })).toContainText(/subscription|billing/i);
  await step('simulated Billing Portal');
  const plans = page.getByLabel('Change plan');
  await plans.selectOption(await plans.locator('option', { hasText: /Pro.*month/ }).getAttribute('value'));
  await page.getByRole('button', { name: 'Update plan' }).click();
  await expect(page.getByRole('heading', { level: 1 })).toContainText(/confirm/i);
  await step('portal asks to confirm the switch');
  await page.getByRole('button', { name: 'Confirm', exact: true }).click();
  await step('portal after the switch');
  // The simulator's signed webhook reaches Tollgate within a second.
  await expect(async () => {
    const panel = await subscriptionPanel(page, tollgate);
    await expect(panel.getByText('Pro', { exact: true })).toBeVisible({ timeout: 500 });
  }).toPass({ timeout: 5_000 });
  await step('account shows Pro');
  await page.goto(`${tollgate.base}/pricing`);
  const current = page.locator('article', { hasText: 'Your current plan' });
  await expect(current.getByRole('heading', { name: 'Pro' })).toBeVisible();
  await step('pricing marks Pro as current');

  // The admin console saw the same deliveries, applied.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page.getByText(/signed out/i)).toBeVisible();
  await step('signed out');
  await signIn(page, step, tollgate, tollgate.admin);
  await step('admin dashboard');
  await page.goto(`${tollgate.base}/admin/webhooks`);
  for (const type of ['checkout.session.completed', 'customer.subscription.updated']) {
    await expect(page.getByRole('row', { name: new RegExp(type.replace(/\./g, '\\.')) }).first()).toContainText('applied');
  }
  await step('admin webhooks lists the deliveries');
});

test('cancel at period end, then resume', async ({ page, step, tollgate }) => {
  await signUp(page, step, tollgate);
  await step('account after sign-up');
  await choosePlan(page, step, tollgate, 'Pro');
  await pay(page, step, '4242 4242 4242 4242');
  await step('checkout success');
  let panel = await subscriptionPanel(page, tollgate);
  await step('account with Pro active');
  await panel.getByRole('button', { name: /cancel/i }).or(panel.getByRole('link', { name: /cancel/i })).first().click();
  await expect(page.getByText(/access continues until/i)).toBeVisible();
  await step('confirm the cancellation');
  await page.getByRole('button', { name: 'Cancel subscription' }).click();
  await expect(page.getByText(/ends at the close of this period/i)).toBeVisible();
  await step('account: ends at period end');
  panel = await subscriptionPanel(page, tollgate);
  await panel.getByRole('button', { name: 'Resume subscription' }).click();
  await expect(page.getByText(/ends at the close of this period/i)).toHaveCount(0);
  await expect(page.getByText(/renews on/i)).toBeVisible();
  await step('account: resumed');
});
