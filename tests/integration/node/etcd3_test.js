// etcd3_test.js - the npm etcd3 client (gRPC via @grpc/grpc-js) through the etcdseal proxy.
// Usage: node etcd3_test.js PROXY_HOST:PORT ETCD_HOST:PORT  (/node/ must be an encrypted prefix;
// etcd itself is only read, for the raw election value)
// Prints one PASS/FAIL line per check (encrypt_node_test.sh turns them into its results) and
// writes nothing but test keys under /node/. The caller checks the raw values in etcd.
'use strict';
const { Etcd3 } = require('etcd3');

const addr = process.argv[2];
const direct = process.argv[3];
const client = new Etcd3({ hosts: 'http://' + addr, dialTimeout: 5000 });
const rawClient = new Etcd3({ hosts: 'http://' + direct, dialTimeout: 5000 });
let failures = 0;

function check(name, ok, detail) {
  if (ok) {
    console.log('PASS node etcd3: ' + name);
  } else {
    failures++;
    console.log('FAIL node etcd3: ' + name + (detail === undefined ? '' : ': ' + detail));
  }
}

async function step(name, fn) {
  try {
    await fn();
  } catch (e) {
    check(name, false, 'threw ' + (e && e.message ? e.message : String(e)));
  }
}

function withTimeout(p, ms, what) {
  let t;
  const timer = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(what + ': no answer within ' + ms + ' ms')), ms);
  });
  return Promise.race([p, timer]).finally(() => clearTimeout(t));
}

async function main() {
  const binary = Buffer.from([0, 255, 10, 13, 0x6b, 0x38, 0x73, 0x3a, 128]);

  await step('put/get', async () => {
    await client.put('/node/k1').value('node-secret-1');
    const v = await client.get('/node/k1').string();
    check('put then get gives the plaintext', v === 'node-secret-1', JSON.stringify(v));
  });

  await step('binary value', async () => {
    await client.put('/node/bin').value(binary);
    const v = await client.get('/node/bin').buffer();
    check('binary value round trip', v !== null && v.equals(binary), v && v.toString('hex'));
  });

  await step('put prev_kv', async () => {
    const prev = await client.put('/node/k1').value('node-secret-2').getPrevious();
    check('put with prev_kv returns the previous plaintext',
      prev && prev.value && prev.value.toString() === 'node-secret-1',
      prev && prev.value && prev.value.toString());
  });

  await step('getAll prefix', async () => {
    await client.put('/node/list/a').value('va');
    await client.put('/node/list/b').value('vb');
    const all = await client.getAll().prefix('/node/list/').strings();
    check('getAll over a prefix gives plaintext values',
      JSON.stringify(all) === JSON.stringify({ '/node/list/a': 'va', '/node/list/b': 'vb' }),
      JSON.stringify(all));
    const n = await client.getAll().prefix('/node/list/').count();
    check('count over a prefix', n === 2, n);
  });

  await step('txn', async () => {
    const ok = await client.if('/node/k1', 'Value', '==', 'node-secret-2')
      .then(client.put('/node/k1').value('node-secret-3'), client.get('/node/k1'))
      .else(client.get('/node/k1'))
      .commit();
    const got = ok.responses[1].response_range.kvs[0].value.toString();
    check('txn VALUE compare true: success branch, plaintext read-back',
      ok.succeeded === true && got === 'node-secret-3', JSON.stringify([ok.succeeded, got]));
    const no = await client.if('/node/k1', 'Value', '==', 'node-secret-1')
      .then(client.put('/node/k1').value('wrong'))
      .else(client.get('/node/k1'))
      .commit();
    const cur = no.responses[0].response_range.kvs[0].value.toString();
    check('txn VALUE compare false: failure branch with plaintext',
      no.succeeded === false && cur === 'node-secret-3', JSON.stringify([no.succeeded, cur]));
    const ver = await client.if('/node/k1', 'Version', '>', 0)
      .then(client.get('/node/list/a'))
      .commit();
    check('txn VERSION compare',
      ver.succeeded === true && ver.responses[0].response_range.kvs[0].value.toString() === 'va');
  });

  await step('watch', async () => {
    const watcher = await client.watch().key('/node/w').withPreviousKV().create();
    const seen = [];
    const done = new Promise((resolve) => {
      watcher.on('put', (kv, prev) => {
        seen.push([kv.value.toString(), prev ? prev.value.toString() : null]);
        if (seen.length === 3) resolve();
      });
    });
    for (const v of ['w1', 'w2', 'w3']) await client.put('/node/w').value(v);
    await withTimeout(done, 10000, 'watch');
    await watcher.cancel();
    check('watch with prev_kv gives plaintext events in order',
      JSON.stringify(seen) === JSON.stringify([['w1', null], ['w2', 'w1'], ['w3', 'w2']]),
      JSON.stringify(seen));
  });

  await step('delete prev_kv', async () => {
    const prev = await client.delete().prefix('/node/list/').getPrevious();
    const vals = prev.map((kv) => kv.value.toString()).sort();
    check('delete of a prefix with prev_kv gives plaintext', JSON.stringify(vals) === '["va","vb"]',
      JSON.stringify(vals));
  });

  await step('lock', async () => {
    const r = await withTimeout(client.lock('/node/lock').do(async () => 'inside'), 10000, 'lock');
    check('lock through the proxy', r === 'inside', r);
  });

  await step('election', async () => {
    // etcd3 stores elections under "election/<name>/"; the namespace puts that under /node/
    const election = client.namespace('/node/').election('e1');
    const campaign = election.campaign('node-leader-1');
    await withTimeout(new Promise((resolve, reject) => {
      campaign.on('elected', resolve);
      campaign.on('error', reject);
    }), 10000, 'campaign');
    const leader = await election.leader();
    check('election: leader value is the plaintext', leader === 'node-leader-1', leader);
    // the election key read straight from etcd (not through the proxy) holds ciphertext
    const raw = await rawClient.getAll().prefix('/node/election/e1/').buffers();
    const vals = Object.values(raw);
    check('election: the stored value (read straight from etcd) is aesgcm ciphertext',
      vals.length === 1 && vals[0].subarray(0, 25).toString() === 'k8s:enc:aesgcm:v1:gcm-it:' &&
      !vals[0].includes('node-leader-1'), JSON.stringify(Object.keys(raw)));
    await campaign.resign();
  });
}

main()
  .catch((e) => check('run', false, e && e.message))
  .finally(() => {
    client.close();
    rawClient.close();
    process.exitCode = failures ? 1 : 0;
  });
