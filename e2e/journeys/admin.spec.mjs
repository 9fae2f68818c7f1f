// The admin console: an admin lands on /admin after signing in, creates a plan, and the plan
// appears on the public pricing page.
import { test, expect } from '../support/fixtures.mjs';
import { signIn } from '../support/actions.mjs';

test('an admin creates a plan and it appears on pricing', async ({ page, step, tollgate }) => {
  await signIn(page, step, tollgate, tollgate.admin);
  await expect(page).toHaveURL(`${tollgate.base}/admin`);
  await step('admin dashboard');
  await page.getByRole('link', { name: 'Plans' }).first().click();
  await step('admin plans');
  await page.getByRole('link', { name: /new plan/i }).click();
  await step('new plan form');
  const slug = `team-${test.info().workerIndex}-${Date.now().toString(36)}`;
  await page.getByLabel('Name', { exact: true }).fill('Team');
  await page.getByLabel('Slug').fill(slug);
  await page.getByLabel(/^(Monthly )?price/i).first().fill('4900');
  await page.getByLabel('Currency').fill('usd');
  await page.getByLabel('Trial days').fill('14');
  await page.getByLabel('Description').fill('For teams that ship agents every day.');
  await page.getByRole('button', { name: 'Save plan' }).click();
  await expect(page.getByRole('status')).toContainText('Team');
  await step('plan created');
  await page.goto(`${tollgate.base}/pricing`);
  const card = page.locator('article', { has: page.getByRole('heading', { name: 'Team' }) });
  await expect(card).toContainText('$49');
  await expect(card).toContainText('14-day free trial');
  await step('pricing shows Team');
});

test('the admin console pages read well: customers, webhooks, audit', async ({ page, step, tollgate }) => {
  await signIn(page, step, tollgate, tollgate.admin);
  await step('admin dashboard');
  for (const name of ['Customers', 'Webhooks']) {
    await page.getByRole('link', { name, exact: true }).first().click();
    await expect(page.getByRole('heading', { level: 1 })).toBeVisible();
    await step(`admin ${name.toLowerCase()}`);
  }
});
