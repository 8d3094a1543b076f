// End-to-end test of the gift card web page in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core; no browser download). Against a cqrsd of its own on a fresh
// database: the page issues a card through its form and shows it; a redemption above the balance
// shows the rejection under the form; a card issued with cqrsctl appears within a second without
// the page reloading; cancelling through the form updates the totals. A screenshot goes to
// $CQRS_TEST_OUTPUT/giftcards.png (failure.png when the test fails).
//
//   node tests/e2e/giftcard_page.mjs     (ctest runs it as e2e.web_giftcard_page)
//
// Environment: DATABASE_URL (a server where the test may create and drop a database), CQRSD_BIN,
// CQRSCTL_BIN, CQRS_TEST_OUTPUT; CHROMIUM to use another browser binary.
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (error) {
  console.error('playwright-core is missing: run `npm ci` in tests/e2e (scripts/test does)');
  throw error;
}

const kPushDeadlineMs = 1000; // the page shows a change this soon after the command's reply
const kStartTimeoutMs = 20000;
const kStopTimeoutMs = 10000;

function required(name) {
  const value = process.env[name];
  if (value) return value;
  if (name === 'DATABASE_URL') {
    throw new Error('DATABASE_URL is not set: run the suite through scripts/test, or export ' +
                    'DATABASE_URL (eval "$(scripts/pg env)" after scripts/pg start)');
  }
  throw new Error(`${name} is not set (ctest sets it: tests/CMakeLists.txt)`);
}

// A connection string for database `name` on the server of `base` (a URL or a keyword string).
function withDatabase(base, name) {
  if (/^postgres(ql)?:\/\//.test(base)) {
    const url = new URL(base);
    url.pathname = '/' + name;
    return url.toString();
  }
  return `${base} dbname=${name}`;
}

function psql(url, sql) {
  const run = spawnSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', url, '-c', sql],
                        { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`psql ${sql}: ${run.stderr || run.error}`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// Starts cqrsd and resolves with { child, gatewayPort, webUrl } once it prints both addresses.
// `timeout` bounds its life even if this process is killed before it can stop it.
function startDaemon(dbUrl, webPort, workDir) {
  const child = spawn('timeout', ['--kill-after=5', '600', required('CQRSD_BIN'),
                                  '--config-file=/dev/null', `--db.url=${dbUrl}`,
                                  '--server.port=0', `--metrics.port=${webPort}`, '--web.enabled',
                                  '--log.level=warn'],
                      { cwd: workDir, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (chunk) => { stderr += chunk; });
  const started = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`cqrsd did not start:\n${stderr}`)),
                             kStartTimeoutMs);
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      const gateway = stdout.match(/cqrsd: listening on [^:\s]+:(\d+)/);
      const web = stdout.match(/cqrsd: web page at (http:\/\/\S+)/);
      if (gateway && web) {
        clearTimeout(timer);
        resolve({ child, gatewayPort: Number(gateway[1]), webUrl: web[1],
                  stderr: () => stderr });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`cqrsd exited (${code}) at start:\n${stderr}`));
    });
  });
  return { child, started };
}

// SIGTERM by PID, then SIGKILL after kStopTimeoutMs; resolves with the exit code.
function stopDaemon(child) {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve(child.exitCode);
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => process.kill(child.pid, 'SIGKILL'), kStopTimeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(code ?? signal);
    });
    process.kill(child.pid, 'SIGTERM');
  });
}

async function submit(page, formId, fields) {
  const form = page.locator(`#${formId}`);
  for (const [name, value] of Object.entries(fields)) {
    await form.locator(`input[name="${name}"]`).fill(String(value));
  }
  const result = form.locator('.result');
  // The previous answer is cleared when the form is sent; wait for the new one.
  await form.locator('button').click();
  await page.waitForFunction((id) => {
    const element = document.querySelector(`#${id} .result`);
    return element.dataset.status && element.textContent !== '…';
  }, formId);
  return { status: await result.getAttribute('data-status'), text: await result.textContent() };
}

function row(page, cardId) {
  return page.locator(`#cards tbody tr[data-card-id="${cardId}"]`);
}

async function main() {
  const outputDir = required('CQRS_TEST_OUTPUT');
  mkdirSync(outputDir, { recursive: true });
  const baseUrl = required('DATABASE_URL');
  const dbName = `cqrs_e2e_${process.pid}_${randomBytes(4).toString('hex')}`;
  const workDir = mkdtempSync(join(tmpdir(), 'cqrs-e2e-'));
  const profileDir = mkdtempSync(join(tmpdir(), 'cqrs-e2e-chromium-'));
  let daemon = null;
  let context = null;
  let page = null;
  let created = false;
  try {
    psql(baseUrl, `CREATE DATABASE ${dbName}`);
    created = true;
    const dbUrl = withDatabase(baseUrl, dbName);
    const launched = startDaemon(dbUrl, await freePort(), workDir);
    daemon = launched.child;
    const running = await launched.started;
    const { gatewayPort, webUrl } = running;

    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
             '--no-first-run'],
    });
    page = context.pages()[0] ?? await context.newPage();
    const requested = [];
    page.on('request', (request) => requested.push(request.url()));
    let navigations = 0;
    page.on('framenavigated', (frame) => {
      if (frame === page.mainFrame()) navigations += 1;
    });

    await page.goto(webUrl);
    assert.equal(await page.title(), 'Gift cards · cqrsd');
    await page.waitForSelector('#live-status[data-state="live"]', { timeout: 5000 });
    assert.equal(await page.textContent('#total-cards'), '0');

    // Issue through the form: the reply shows under it, the row and totals come by push.
    const issued = await submit(page, 'issue-form', { card_id: 'e2e-1', amount: 5000 });
    assert.equal(issued.status, 'ok', issued.text);
    assert.match(issued.text, /GiftCardIssued/);
    await row(page, 'e2e-1').waitFor({ timeout: 5000 });
    assert.equal(await row(page, 'e2e-1').getAttribute('data-remaining'), '5000');
    await page.waitForFunction(() =>
      document.querySelector('#total-outstanding').textContent === '5000', null,
    { timeout: 5000 });
    assert.equal(await page.textContent('#total-cards'), '1');

    // More than the balance: the domain's rejection, shown inline; nothing changes.
    const rejected = await submit(page, 'redeem-form', { card_id: 'e2e-1', amount: 9000 });
    assert.equal(rejected.status, 'rejected', rejected.text);
    assert.match(rejected.text, /insufficient_balance/);
    assert.match(rejected.text, /insufficient balance: gift card e2e-1 has 5000 left/);
    assert.ok(await page.locator('#redeem-result').isVisible());
    assert.equal(await row(page, 'e2e-1').getAttribute('data-remaining'), '5000');

    // A card issued from outside appears without a reload.
    await page.evaluate(() => { window.e2eMarker = 'same document'; });
    const navigationsBefore = navigations;
    const ctl = await promisify(execFile)(required('CQRSCTL_BIN'), [
      '--port', String(gatewayPort), 'dispatch', 'IssueGiftCard',
      '{"card_id":"from-cqrsctl","amount":1234}']);
    const answered = Date.now();
    assert.equal(JSON.parse(ctl.stdout.split('\n')[0]).status, 'ok', ctl.stdout);
    await row(page, 'from-cqrsctl').waitFor({ timeout: 5000 });
    const shownAfter = Date.now() - answered;
    assert.ok(shownAfter < kPushDeadlineMs,
              `the row appeared ${shownAfter} ms after cqrsctl's reply`);
    assert.equal(await page.evaluate(() => window.e2eMarker), 'same document',
                 'the page was reloaded');
    assert.equal(navigations, navigationsBefore, 'the page navigated');
    await page.waitForFunction(() =>
      document.querySelector('#total-outstanding').textContent === '6234', null,
    { timeout: 5000 });
    assert.equal(await page.textContent('#total-cards'), '2');

    // Clicking a row fills its id in; cancelling takes its balance out of the outstanding total.
    await row(page, 'e2e-1').click();
    assert.equal(await page.inputValue('#cancel-form input[name="card_id"]'), 'e2e-1');
    const cancelled = await submit(page, 'cancel-form', {});
    assert.equal(cancelled.status, 'ok', cancelled.text);
    await page.waitForSelector('#cards tbody tr[data-card-id="e2e-1"][data-status="cancelled"]',
                               { timeout: 5000 });
    await page.waitForFunction(() =>
      document.querySelector('#total-outstanding').textContent === '1234', null,
    { timeout: 5000 });

    // Everything the page loaded came from cqrsd.
    const origin = new URL(webUrl).origin;
    const foreign = requested.filter((url) => new URL(url).origin !== origin);
    assert.deepEqual(foreign, [], 'requests outside cqrsd');

    await page.screenshot({ path: join(outputDir, 'giftcards.png'), fullPage: true,
                            animations: 'disabled' });
    console.log(`ok: screenshot in ${join(outputDir, 'giftcards.png')}`);

    await context.close();
    context = null;
    const code = await stopDaemon(daemon);
    assert.equal(code, 0, `cqrsd exited with ${code}:\n${running.stderr()}`);
    daemon = null;
  } catch (error) {
    if (page) {
      await page.screenshot({ path: join(outputDir, 'failure.png'), fullPage: true })
        .catch(() => {});
    }
    throw error;
  } finally {
    if (context) await context.close().catch(() => {});
    if (daemon) await stopDaemon(daemon);
    if (created) psql(baseUrl, `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    rmSync(workDir, { recursive: true, force: true });
    rmSync(profileDir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  });
