#!/usr/bin/env node
// Signs one gateway request with the official alipay-sdk (npm), so the Rust crate can be
// compared with it byte for byte (crates/alipay/tests/it/interop.rs).
//
// Usage: node sign.js KEY.pem [PARAMS.json]    (PARAMS from stdin when no file is given)
//
// PARAMS is a JSON object of the parameters a request sends, all strings, e.g.
//   {"app_id":"2021…","method":"alipay.trade.precreate","charset":"utf-8","sign_type":"RSA2",
//    "version":"1.0","format":"JSON","timestamp":"2024-05-13 17:49:20","biz_content":"{…}"}
// `app_id`, `charset`, `version` and `sign_type` become the SDK config, `method` its method
// argument, `biz_content` is parsed and handed over as the object the SDK serialises itself,
// and every other parameter is passed through as a request parameter.
//
// Prints one JSON line: {"string_to_sign": "...", "sign": "...", "params": {...}} where
// `params` is what the SDK would send. The SDK does not return its string-to-sign, so it is
// rebuilt from the SDK's output the way the SDK builds it, and then checked: the SDK's
// signature must verify over it, or this script fails.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');

// The SDK's `sign` lives in its util module, which the package's export map does not expose;
// load it by file path from the installed package.
const sdkDir = path.join(__dirname, 'node_modules', 'alipay-sdk');
const { sign } = require(path.join(sdkDir, 'dist', 'commonjs', 'util.js'));
const sdkVersion = require(path.join(sdkDir, 'package.json')).version;

function fail(msg) {
  process.stderr.write(`sign.js: ${msg}\n`);
  process.exit(2);
}

const [keyPath, paramsPath] = process.argv.slice(2);
if (!keyPath) fail('usage: node sign.js KEY.pem [PARAMS.json]');
const privateKey = fs.readFileSync(keyPath, 'utf8');
const input = JSON.parse(fs.readFileSync(paramsPath ?? 0, 'utf8'));

const config = {
  appId: input.app_id,
  charset: input.charset ?? 'utf-8',
  version: input.version ?? '1.0',
  signType: input.sign_type ?? 'RSA2',
  privateKey,
};
const method = input.method;
if (!method) fail('params have no `method`');

const params = {};
for (const [key, value] of Object.entries(input)) {
  if (['app_id', 'charset', 'version', 'sign_type', 'method', 'sign'].includes(key)) continue;
  params[key] = key === 'biz_content' ? JSON.parse(value) : value;
}

const signed = sign(method, params, config);

// The SDK's own join (util.ts `sign`): every key but `sign`, sorted, `k=v`, non-strings as JSON.
const stringToSign = Object.keys(signed)
  .filter((k) => k !== 'sign')
  .sort()
  .map((k) => {
    const v = signed[k];
    return `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`;
  })
  .join('&');

const algorithm = config.signType === 'RSA' ? 'RSA-SHA1' : 'RSA-SHA256';
const ok = crypto
  .createVerify(algorithm)
  .update(stringToSign, 'utf8')
  .verify(crypto.createPublicKey(privateKey), signed.sign, 'base64');
if (!ok) fail('rebuilt string-to-sign does not match what the SDK signed');

process.stdout.write(
  `${JSON.stringify({ sdk_version: sdkVersion, string_to_sign: stringToSign, sign: signed.sign, params: signed })}\n`,
);
