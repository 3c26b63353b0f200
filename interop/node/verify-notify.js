#!/usr/bin/env node
// Verifies one asynchronous notification with the official alipay-sdk (npm), so the Rust
// tests can check that the notifications they build are the ones Alipay's SDK accepts.
//
// Usage: node verify-notify.js ALIPAY_PUBLIC_KEY.pem < BODY
//
// BODY is the raw form body (`application/x-www-form-urlencoded`, utf-8). Prints one JSON
// line: {"check_notify_sign_v2": true|false}, the answer of `AlipaySdk#checkNotifySignV2`
// (which tries the string with `sign_type` and then without, like rsaCheckV2 then V1).
'use strict';

const fs = require('node:fs');
const { AlipaySdk } = require('alipay-sdk');

const [keyPath] = process.argv.slice(2);
if (!keyPath) {
  process.stderr.write('usage: node verify-notify.js ALIPAY_PUBLIC_KEY.pem < BODY\n');
  process.exit(2);
}
const body = fs.readFileSync(0, 'utf8');
const postData = Object.fromEntries(new URLSearchParams(body));
const sdk = new AlipaySdk({
  appId: postData.app_id ?? 'unused',
  // Only verification is done here; the SDK insists on a private key string all the same.
  privateKey: 'unused',
  alipayPublicKey: fs.readFileSync(keyPath, 'utf8'),
});
process.stdout.write(`${JSON.stringify({ check_notify_sign_v2: sdk.checkNotifySignV2(postData) })}\n`);
