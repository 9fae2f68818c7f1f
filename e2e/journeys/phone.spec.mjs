// A 390 px wide phone: nothing overflows sideways on pricing, account and the admin pages, and
// the header folds into a menu.
import { test, expect } from '../support/fixtures.mjs';
import { signUp, signIn, choosePlan, pay } from '../support/actions.mjs';

test.use({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });

test('customer pages fit a phone', async ({ page, step, tollgate }) => {
  await page.goto(`${tollgate.base}/`);
  const menu = page.locator('summary', { hasText: 'Menu' });
  await expect(menu).toBeVisible();
  await expect(page.getByRole('link', { name: 'Pricing' })).toBeHidden();
  await step('home on a phone');
  await menu.click();
  await expect(page.getByRole('link', { name: 'Pricing' })).toBeVisible();
  await step('menu open on a phone');
  await signUp(page, step, tollgate);
  await step('account on a phone');
  await choosePlan(page, step, tollgate, 'Pro');
  await pay(page, step, '4242 4242 4242 4242');
  await step('checkout success on a phone');
  await page.goto(`${tollgate.base}/account`);
  await step('account with a plan on a phone');
  await page.goto(`${tollgate.base}/account/keys`);
  await step('keys on a phone');
  await page.goto(`${tollgate.base}/pricing`);
  await step('pricing on a phone');
});

test('admin pages fit a phone', async ({ page, step, tollgate }) => {
  await signIn(page, step, tollgate, tollgate.admin);
  await step('admin dashboard on a phone');
  for (const path of ['/admin/plans', '/admin/plans/new', '/admin/customers', '/admin/webhooks']) {
    await page.goto(`${tollgate.base}${path}`);
    await expect(page.getByRole('heading', { level: 1 })).toBeVisible();
    await step(`${path} on a phone`);
  }
});
