// The checks the journeys rely on can fail: each one is shown a page that breaks it.
import { test, expect, horizontalOverflow, seriousAccessibilityViolations } from '../support/fixtures.mjs';

test('a CSP violation and a console error are caught', async ({ page, problems, tollgate }) => {
  problems.expected = true;
  await page.goto(`${tollgate.base}/`);
  // An inline script: Tollgate's CSP must refuse it, and the watcher must hear about it.
  await page.evaluate(() => {
    const script = document.createElement('script');
    script.textContent = 'window.__ran = true';
    document.body.append(script);
  });
  await expect.poll(() => problems.csp.length).toBeGreaterThan(0);
  expect(await page.evaluate(() => window.__ran)).toBeUndefined();
  expect(problems.csp[0]).toContain('script-src');
  await page.evaluate(() => console.error('broken on purpose'));
  await expect.poll(() => problems.console.some((m) => m.includes('broken on purpose'))).toBe(true);
});

test('horizontal overflow and serious accessibility violations are caught', async ({ page, problems, tollgate }) => {
  problems.expected = true;
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${tollgate.base}/`);
  expect(await horizontalOverflow(page)).toBeNull();
  expect(await seriousAccessibilityViolations(page)).toEqual([]);
  await page.evaluate(() => {
    const wide = document.createElement('div');
    wide.className = 'too-wide';
    wide.textContent = 'x'.repeat(400);
    wide.setAttribute('aria-hidden', 'false');
    document.querySelector('main').append(wide);
    const image = document.createElement('img');
    image.src = '/favicon.svg';
    document.querySelector('main').append(image);
  });
  const overflow = await horizontalOverflow(page);
  expect(overflow?.offenders.join(' ')).toContain('div.too-wide');
  const a11y = await seriousAccessibilityViolations(page);
  expect(a11y.join('\n')).toContain('image-alt');
});
