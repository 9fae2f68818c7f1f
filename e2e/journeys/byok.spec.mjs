// Bring your own key: add, replace and delete an AI provider key; the key is never shown whole,
// neither on the page nor in the form after saving.
import { test, expect } from '../support/fixtures.mjs';
import { signUp } from '../support/actions.mjs';

// Obvious dummies in the providers' shapes.
const FIRST = 'sk-ant-api03-DUMMY-e2e-first-0000000000000000000000';
const SECOND = 'sk-ant-api03-DUMMY-e2e-second-111111111111111111111';

async function save(page, key) {
  await page.getByLabel('Provider').selectOption('anthropic');
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Save key' }).click();
}

async function expectNeverWhole(page, key) {
  const html = await page.content();
  expect(html).not.toContain(key);
  expect(html).not.toContain(key.slice(12, 30));
  await expect(page.getByLabel('API key')).toHaveValue('');
}

test('a key is added, replaced and deleted, and only ever shown masked', async ({ page, step, tollgate }) => {
  await signUp(page, step, tollgate);
  await step('account after sign-up');
  await page.getByRole('link', { name: 'API keys' }).first().click();
  await expect(page.getByText('No keys yet.')).toBeVisible();
  await step('no keys yet');

  await save(page, FIRST);
  const row = page.getByRole('row', { name: /Anthropic/ });
  await expect(row).toContainText(FIRST.slice(-3));
  await expectNeverWhole(page, FIRST);
  await step('key added, masked');

  await save(page, SECOND);
  await expect(row).toContainText(SECOND.slice(-3));
  await expect(row).not.toContainText(FIRST.slice(-3));
  await expect(page.getByRole('row', { name: /Anthropic/ })).toHaveCount(1);
  await expectNeverWhole(page, SECOND);
  await step('key replaced, masked');

  await row.getByRole('button', { name: 'Delete' }).or(row.getByRole('link', { name: 'Delete' })).click();
  expect(await page.content()).not.toContain(SECOND);
  await step('confirm the deletion');
  await page.getByRole('button', { name: 'Delete key' }).click();
  await expect(page.getByText('No keys yet.')).toBeVisible();
  await step('key deleted');
});

test('a key of the wrong shape is refused with a message that says why', async ({ page, step, tollgate }) => {
  await signUp(page, step, tollgate);
  await step('account after sign-up');
  await page.goto(`${tollgate.base}/account/keys`);
  await step('keys page');
  await save(page, 'not-a-provider-key-at-all-000000000');
  await expect(page.getByRole('alert').first()).toContainText(/Anthropic/);
  await expect(page.getByText('No keys yet.')).toBeVisible();
  await step('wrong shape refused');
});
