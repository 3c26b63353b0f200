// The buyer's H5 pages in a real headless Chromium against a real `openvend serve` with its
// embedded Alipay sandbox (OAuth pages, gateway, cashier, bridge.js):
//
//   1. a new buyer: machine page → sandbox sign-in and consent → phone + SMS code (read from
//      the log provider's outbox file) → pick a product → pay in the sandbox cashier → the page
//      shows the order paid (and that the dispense was queued) or dispensed;
//   2. the same buyer from a fresh browser: straight to the products (免登);
//   3. another Alipay user with the first buyer's phone: bound to the same account;
//   4. all of it again with the sandbox app in open_id mode.
//
// Usage: node h5.mjs <openvend binary> <screenshot folder>
// Chromium: /usr/bin/chromium (Debian), or $CHROMIUM. Each step's screenshot is saved.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const [binary, shots] = process.argv.slice(2);
if (!binary || !shots) {
  console.error('usage: node h5.mjs <openvend binary> <screenshot folder>');
  process.exit(2);
}
fs.mkdirSync(shots, { recursive: true });
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const STEP_MS = 20_000;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Starts `openvend serve` on free ports in a fresh data folder; resolves when it serves. */
async function serve(name, env) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `openvend-${name}-`));
  const port = await freePort();
  const sandboxPort = await freePort();
  const mqttPort = await freePort();
  const child = spawn(binary, ['serve'], {
    env: {
      ...process.env,
      OPENVEND_DATA_DIR: dataDir,
      OPENVEND_LISTEN: `127.0.0.1:${port}`,
      OPENVEND_SANDBOX_LISTEN: `127.0.0.1:${sandboxPort}`,
      OPENVEND_MQTT_EMBEDDED_LISTEN: `127.0.0.1:${mqttPort}`,
      // Scenario 3 sends a second code to the same phone within the minute.
      OPENVEND_SMS_RESEND_SECS: '1',
      OPENVEND_LOG: 'info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  const deadline = Date.now() + 60_000;
  while (!out.includes('OpenVend is running')) {
    if (child.exitCode !== null) throw new Error(`openvend serve exited:\n${out}`);
    if (Date.now() > deadline) throw new Error(`openvend serve did not start:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const base = `http://127.0.0.1:${port}`;
  const sandbox = `http://127.0.0.1:${sandboxPort}`;
  // The demo machine VM-0001 is online: a simulated machine that vends what is paid.
  const sim = spawn(binary, ['machine-sim', '--server', base,
    '--token-file', path.join(dataDir, 'api_token'), '--machine', 'VM-0001', '--vend-ms', '100'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let simOut = '';
  sim.stdout.on('data', (d) => { simOut += d; });
  sim.stderr.on('data', (d) => { simOut += d; });
  while (!simOut.includes('online at')) {
    if (sim.exitCode !== null) throw new Error(`machine-sim exited:\n${simOut}`);
    if (Date.now() > deadline) throw new Error(`machine-sim did not connect:\n${simOut}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const stopChild = (c) => new Promise((resolve) => {
    if (c.exitCode !== null) return resolve();
    c.once('exit', resolve);
    c.kill('SIGTERM');
  });
  return {
    base, sandbox, dataDir, log: () => `${out}\n--- machine-sim ---\n${simOut}`,
    stop: async () => { await stopChild(sim); await stopChild(child); },
  };
}

async function control(server, route, body) {
  const r = await fetch(`${server.sandbox}${route}`, {
    method: body ? 'POST' : 'GET',
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  assert.equal(r.status, 200, `${route}: ${r.status} ${text}`);
  return JSON.parse(text);
}

/** The newest code the log provider wrote for this phone (masked as 138****0000). */
async function smsCode(server, phone, notBefore) {
  const masked = `${phone.slice(0, 3)}****${phone.slice(7)}`;
  const file = path.join(server.dataDir, 'sms-outbox.log');
  const deadline = Date.now() + STEP_MS;
  for (;;) {
    const lines = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim().split('\n') : [];
    const mine = lines.filter((l) => l.startsWith(masked));
    if (mine.length > notBefore) return mine[mine.length - 1].split(' ')[1];
    if (Date.now() > deadline) throw new Error(`no SMS code for ${masked}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function codesSent(server, phone) {
  const masked = `${phone.slice(0, 3)}****${phone.slice(7)}`;
  const file = path.join(server.dataDir, 'sms-outbox.log');
  if (!fs.existsSync(file)) return 0;
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.startsWith(masked)).length;
}

let shot = 0;
async function snap(page, label) {
  shot += 1;
  const file = path.join(shots, `${String(shot).padStart(2, '0')}-${label}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`    screenshot ${file}`);
}

/** A fresh browser profile: a 375 px phone screen, Chinese. */
async function phone(browser) {
  const context = await browser.newContext({
    viewport: { width: 375, height: 812 },
    deviceScaleFactor: 2,
    locale: 'zh-CN',
    extraHTTPHeaders: { 'accept-language': 'zh-CN,zh;q=0.9' },
  });
  context.setDefaultTimeout(STEP_MS);
  return context.newPage();
}

/** At the sandbox's authorize page: pick the buyer and sign in (and consent, when asked). */
async function signInAtAlipay(page, buyer, tag) {
  await page.waitForURL(/\/oauth2\/publicAppAuthorize\.htm/);
  await snap(page, `${tag}-alipay-sign-in`);
  await page.selectOption('select[name=user_id]', buyer);
  await page.click('button[type=submit]');
}

async function consent(page, buyer, tag) {
  await signInAtAlipay(page, buyer, `${tag}-auth-user`);
  await page.waitForSelector('button[value=allow]');
  await snap(page, `${tag}-consent`);
  await page.click('button[value=allow]');
}

async function bindPhone(server, page, number, tag) {
  await page.waitForURL(/\/m\/phone$/);
  await snap(page, `${tag}-phone`);
  const before = codesSent(server, number);
  for (let tries = 0; ; tries += 1) {
    await page.fill('#phone', number);
    const [resp] = await Promise.all([page.waitForResponse(/\/m\/phone\/send$/), page.click('#send')]);
    if (resp.status() === 200) break;
    // A code went to this number within the resend interval (1 s here): ask again.
    assert.equal(resp.status(), 429, await page.textContent('#message'));
    assert.ok(tries < 20, 'the resend interval never passed');
    await new Promise((r) => setTimeout(r, 500));
  }
  const code = await smsCode(server, number, before);
  await page.waitForSelector('#code');
  await snap(page, `${tag}-code`);
  await page.fill('#code', code);
  await page.click('#verify');
}

async function buyAndPay(server, page, tag) {
  await page.waitForURL(/\/m\/VM-0001$/);
  await page.waitForSelector('#qty-A1');
  await snap(page, `${tag}-products`);
  await page.fill('#qty-A1', '1');
  await page.dispatchEvent('#qty-A1', 'input');
  assert.equal(await page.textContent('#total'), '¥3.50');
  await page.click('#buy');
  await page.waitForURL(/\/m\/o\/\d+\?pay=1$/);
  // tradePay opens the sandbox cashier over the page.
  const cashier = page.frameLocator('#alipay-sandbox-cashier iframe');
  await cashier.locator('button[value=pay]').waitFor();
  await snap(page, `${tag}-cashier`);
  await cashier.locator('button[value=pay]').click();
  // The line may already be cleared (the order final): present is enough.
  await page.waitForSelector('#result[data-code="9000"]', { state: 'attached' });
  // The server's state wins; the page follows the order until the machine has vended.
  await page.waitForFunction(() => document.getElementById('status').dataset.state === 'completed',
    null, { timeout: STEP_MS });
  // Once the order is final, the bridge's "paid; confirming…" line is gone.
  assert.equal((await page.textContent('#result')).trim(), '', 'no stale subtitle under a final state');
  await snap(page, `${tag}-dispensed`);
  const id = Number(new URL(page.url()).pathname.split('/').pop());
  const status = await page.evaluate(async (i) => (await fetch(`/m/o/${i}/status`)).json(), id);
  assert.equal(status.paid, true);
  assert.equal(status.state, 'completed');
  console.log(`    order ${id}: completed (dispensed by the simulated machine)`);
  return id;
}

async function scenario(browser, mode) {
  const tag = mode === 'open_id' ? 'openid' : 'userid';
  console.log(`--> ${mode} mode`);
  const server = await serve(tag, { OPENVEND_SANDBOX_ID_MODE: mode });
  try {
    const first = (await control(server, '/control/buyers', { nick_name: `${tag}买家` })).user_id;
    const number = mode === 'open_id' ? '15800158000' : '13800138000';

    console.log('  new buyer: consent, phone, pay');
    let page = await phone(browser);
    await page.goto(`${server.base}/m/VM-0001`);
    await signInAtAlipay(page, first, `${tag}-1`);
    await consent(page, first, `${tag}-1`);
    await bindPhone(server, page, number, `${tag}-1`);
    const id = await buyAndPay(server, page, `${tag}-1`);
    await page.goto(`${server.base}/m/account`);
    assert.ok((await page.textContent('#phone')).includes(number), 'the owner sees their phone');
    assert.ok(await page.isVisible(`a[href="/m/o/${id}"]`));
    await snap(page, `${tag}-1-account`);
    await page.context().close();

    console.log('  same buyer, fresh browser: straight to the products (免登)');
    page = await phone(browser);
    await page.goto(`${server.base}/m/VM-0001`);
    await signInAtAlipay(page, first, `${tag}-2`);
    await page.waitForURL(/\/m\/VM-0001$/);
    await page.waitForSelector('#qty-A1');
    await snap(page, `${tag}-2-products-at-once`);
    await page.context().close();

    console.log('  another Alipay user with the same phone: bound to the same account');
    const second = (await control(server, '/control/buyers', { nick_name: `${tag}第二账号` })).user_id;
    page = await phone(browser);
    await page.goto(`${server.base}/m/VM-0001`);
    await signInAtAlipay(page, second, `${tag}-3`);
    await consent(page, second, `${tag}-3`);
    await bindPhone(server, page, number, `${tag}-3`);
    await page.waitForURL(/\/m\/VM-0001$/);
    await page.goto(`${server.base}/m/account`);
    assert.ok(await page.isVisible(`a[href="/m/o/${id}"]`), 'the bound account shows the first order');
    await snap(page, `${tag}-3-account`);
    await page.context().close();
  } catch (e) {
    console.error(server.log());
    throw e;
  } finally {
    await server.stop();
    fs.rmSync(server.dataDir, { recursive: true, force: true });
  }
}

const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
try {
  await scenario(browser, 'user_id');
  await scenario(browser, 'open_id');
  console.log('browser: 2 passed, 0 failed');
} finally {
  await browser.close();
}
