// End-to-end test of `vlmforge deploy` through the official openai npm client: plain, streaming,
// logprobs, runtime LoRA, images (a tiny Qwen2.5-VL answers as `infer --images`; a text-only model
// refuses them), --device_map across capped cpu devices, errors, cancellation on disconnect, 429 on
// a full queue, and SIGTERM finishing the request in flight. Run by run_e2e.sh (ctest deploy_e2e_openai).
import { spawn, execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import OpenAI from 'openai';

const VLMFORGE = process.env.VLMFORGE;
const MODEL_DIR = process.env.MODEL_DIR;
const TOKENIZER = process.env.TOKENIZER;
const KEY = 'test-key';
const NAME = 'tiny';

function startServer(extra, model = MODEL_DIR) {
  const portArgs = extra.includes('--port') ? [] : ['--port', '0'];
  const child = spawn(VLMFORGE, ['deploy', '--model', model, ...portArgs, '--served_model_name', NAME,
    '--max_model_len', '512', '--threads', '2', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, stderr })));
  const port = new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) resolve(Number(m[1]));
    });
    exited.then((e) => reject(new Error(`server exited early: ${JSON.stringify(e)}`)));
  });
  return { child, port, exited };
}

const results = [];
async function test(name, fn) {
  try {
    await fn();
    results.push([name, 'ok']);
    console.log(`ok   ${name}`);
  } catch (e) {
    results.push([name, 'FAIL']);
    console.log(`FAIL ${name}\n${e.stack}`);
  }
}

async function expectError(promise, status, check = () => {}) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof OpenAI.APIError, `not an APIError: ${e}`);
    assert.equal(e.status, status, `status ${e.status}: ${e.message}`);
    check(e);
    return e;
  }
  assert.fail(`expected HTTP ${status}`);
}

function infer(query, maxTokens, extra = [], model = MODEL_DIR) {
  const out = execFileSync(VLMFORGE, ['infer', '--model', model, '--query', query, '--temperature', '0',
    '--max_new_tokens', String(maxTokens), '--max_model_len', '512', '--json', ...extra], { stdio: ['ignore', 'pipe', 'ignore'] });
  return JSON.parse(out.toString());
}

async function metric(base, series) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  assert.ok(line, `metric ${series} missing`);
  return Number(line.split(' ')[1]);
}

// An 8-bit RGB PNG made here (node's zlib): a gradient with a bright square, so the image has detail.
function gradientPng(width, height) {
  const table = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xFFFFFFFF;
    for (const b of buf) c = table[(c ^ b) & 0xFF] ^ (c >>> 8);
    return (c ^ 0xFFFFFFFF) >>> 0;
  };
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const out = Buffer.alloc(body.length + 8);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc(body), body.length + 4);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;  // bit depth
  ihdr[9] = 2;  // RGB
  const stride = width * 3 + 1;
  const raw = Buffer.alloc(stride * height);  // filter byte 0 on every row
  for (let y = 0; y < height; ++y)
    for (let x = 0; x < width; ++x) {
      const o = y * stride + 1 + x * 3;
      const square = x > width / 3 && x < width / 2 && y > height / 4 && y < height / 2;
      raw[o] = Math.floor((x * 255) / width);
      raw[o + 1] = Math.floor((y * 255) / height);
      raw[o + 2] = square ? 255 : 40;
    }
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]), chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

const main = startServer(['--api_key', KEY, '--max_batch_size', '4', '--max_body_mb', '1']);
const port = await main.port;
const base = `http://127.0.0.1:${port}`;
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: KEY, maxRetries: 0 });
const user = (content) => [{ role: 'user', content }];

await test('models lists the served name', async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), [NAME]);
  assert.equal(models.data[0].object, 'model');
});

await test('greedy chat equals vlmforge infer', async () => {
  const ref = infer('Tell me a story', 24);
  const r = await client.chat.completions.create({ model: NAME, messages: user('Tell me a story'), temperature: 0, max_tokens: 24 });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].message.content, ref.response);
  assert.equal(r.choices[0].finish_reason, ref.finish_reason);
  assert.deepEqual(r.usage, { prompt_tokens: ref.prompt_tokens, completion_tokens: ref.completion_tokens,
    total_tokens: ref.prompt_tokens + ref.completion_tokens });
});

await test('concurrent requests (continuous batching) equal one-at-a-time infer', async () => {
  const queries = ['one', 'two words', 'a somewhat longer question here', 'four', 'five five', 'six'];
  const lengths = [30, 12, 20, 5, 25, 16];
  const replies = await Promise.all(queries.map((q, i) => client.chat.completions.create(
    { model: NAME, messages: user(q), temperature: 0, max_completion_tokens: lengths[i] })));
  queries.forEach((q, i) => assert.equal(replies[i].choices[0].message.content, infer(q, lengths[i]).response, q));
});

await test('streaming equals non-streaming for the same seed (with usage and logprobs)', async () => {
  const params = { model: NAME, messages: user('Sample something'), temperature: 0.9, top_p: 0.95, top_k: 50, seed: 1234,
    max_tokens: 20, logprobs: true, top_logprobs: 3 };
  const whole = await client.chat.completions.create(params);
  const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let text = '', finish = null, usage = null, role = null;
  const tokens = [];
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    if (!chunk.choices.length) continue;
    const c = chunk.choices[0];
    if (c.delta.role) role = c.delta.role;
    text += c.delta.content ?? '';
    if (c.logprobs) tokens.push(...c.logprobs.content);
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.equal(role, 'assistant');
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(finish, whole.choices[0].finish_reason);
  assert.deepEqual(usage, whole.usage);
  assert.deepEqual(tokens, whole.choices[0].logprobs.content);
});

await test('logprobs: top_logprobs sorted, chosen token among them under greedy, probabilities <= 1', async () => {
  const r = await client.chat.completions.create({ model: NAME, messages: user('hi'), temperature: 0, max_tokens: 6,
    logprobs: true, top_logprobs: 5 });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, r.usage.completion_tokens);
  for (const t of content) {
    assert.equal(t.top_logprobs.length, 5);
    assert.ok(t.logprob <= 0);
    for (let i = 1; i < 5; ++i) assert.ok(t.top_logprobs[i - 1].logprob >= t.top_logprobs[i].logprob);
    assert.equal(t.top_logprobs[0].token, t.token);
    assert.equal(t.top_logprobs[0].logprob, t.logprob);
    if (!t.token.includes('\uFFFD')) assert.equal(Buffer.from(t.bytes).toString('utf8'), t.token);
  }
  const total = content[0].top_logprobs.reduce((s, t) => s + Math.exp(t.logprob), 0);
  assert.ok(total <= 1 + 1e-9);
});

await test('completions: text, token-id prompt, streaming and legacy logprobs', async () => {
  const r = await client.completions.create({ model: NAME, prompt: 'The capital of France is', temperature: 0, max_tokens: 8, logprobs: 2 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices[0].logprobs.tokens.length, 8);
  assert.equal(r.choices[0].logprobs.tokens.join(''), r.choices[0].text);
  assert.equal(r.choices[0].logprobs.text_offset[0], 0);
  const ids = await client.completions.create({ model: NAME, prompt: [785, 6722, 315, 9625, 374], temperature: 0, max_tokens: 8 });
  assert.equal(ids.choices[0].text, r.choices[0].text);  // the same prompt as ids
  const s = await client.completions.create({ model: NAME, prompt: 'The capital of France is', temperature: 0, max_tokens: 8, stream: true });
  let text = '';
  for await (const chunk of s) text += chunk.choices[0]?.text ?? '';
  assert.equal(text, r.choices[0].text);
});

await test('stop strings end the answer and are left out', async () => {
  const full = (await client.chat.completions.create({ model: NAME, messages: user('Tell me a story'), temperature: 0, max_tokens: 24 })).choices[0].message.content;
  const stop = full.slice(6, 9);
  const r = await client.chat.completions.create({ model: NAME, messages: user('Tell me a story'), temperature: 0, max_tokens: 24, stop: [stop] });
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.choices[0].message.content, full.slice(0, full.indexOf(stop)));
});

const png = fs.readFileSync(process.env.PNG_FILE);
await test('image parts: a valid data: URL to a text-only model is a 400 naming the reason', async () => {
  const msg = user([{ type: 'text', text: 'what is this?' }, { type: 'image_url', image_url: { url: `data:image/png;base64,${png.toString('base64')}` } }]);
  await expectError(client.chat.completions.create({ model: NAME, messages: msg }), 400, (e) => {
    assert.equal(e.code, 'image_input_not_supported');
    assert.match(e.message, /text-only/);
  });
});

await test('image parts: remote, unreadable, outside-the-directory and bad base64 URLs are 400s', async () => {
  const bad = async (url, pattern) => expectError(client.chat.completions.create({ model: NAME,
    messages: user([{ type: 'image_url', image_url: { url } }]) }), 400, (e) => {
    assert.match(e.message, pattern);
    assert.equal(e.param, 'messages[0].content[0].image_url.url');
  });
  await bad('https://example.com/cat.png', /remote image URLs are not fetched/);
  await bad('file:///etc/hostname', /--allowed_local_media_path/);
  await bad('data:image/png;base64,@@@@', /not valid base64/);
  await bad('data:image/png;base64,aGVsbG8=', /not a readable image/);
});

await test('errors: 401, 404, 400 types / unsupported / context, 413, malformed JSON', async () => {
  const noKey = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await expectError(noKey.models.list(), 401, (e) => assert.equal(e.code, 'invalid_api_key'));
  await expectError(client.chat.completions.create({ model: 'gpt-4o', messages: user('hi') }), 404,
    (e) => assert.equal(e.code, 'model_not_found'));
  await expectError(client.chat.completions.create({ model: NAME, messages: user('hi'), temperature: 'hot' }), 400,
    (e) => assert.equal(e.param, 'temperature'));
  await expectError(client.chat.completions.create({ model: NAME, messages: user('hi'), n: 2 }), 400, (e) => assert.equal(e.param, 'n'));
  await expectError(client.chat.completions.create({ model: NAME, messages: user('hi'), tools: [{ type: 'function', function: { name: 'f' } }] }), 400,
    (e) => assert.equal(e.param, 'tools'));
  await expectError(client.chat.completions.create({ model: NAME, messages: user('hi'), max_tokens: 100000 }), 400,
    (e) => assert.equal(e.code, 'context_length_exceeded'));
  await expectError(client.chat.completions.create({ model: NAME, messages: user('x'.repeat(2 << 20)) }), 413);
  const raw = await fetch(`${base}/v1/chat/completions`, { method: 'POST', body: '{"model": ',
    headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' } });
  assert.equal(raw.status, 400);
  const body = await raw.json();
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(body.error.type, 'invalid_request_error');
  assert.equal((await fetch(`${base}/health`)).status, 200);
});

await test('a client that disconnects has its sequence cancelled and its KV cache freed', async () => {
  const before = await metric(base, 'vlmforge_sequences_total{outcome="cancelled"}');
  for (const stream of [false, true]) {
    const controller = new AbortController();
    const p = client.chat.completions.create({ model: NAME, messages: user('long'), temperature: 0, max_tokens: 450, stream },
      { signal: controller.signal });
    if (stream) { const s = await p; const it = s[Symbol.asyncIterator](); await it.next(); controller.abort(); await it.next().catch(() => {}); }
    else { await new Promise((r) => setTimeout(r, 300)); controller.abort(); await p.catch(() => {}); }
  }
  for (let i = 0; i < 100 && await metric(base, 'vlmforge_sequences_total{outcome="cancelled"}') < before + 2; ++i)
    await new Promise((r) => setTimeout(r, 50));
  assert.equal(await metric(base, 'vlmforge_sequences_total{outcome="cancelled"}'), before + 2);
  assert.equal(await metric(base, 'vlmforge_running_batch_size'), 0);
  assert.equal(await metric(base, 'vlmforge_memory_bytes{device="cpu",kind="kv_cache"}'), 0);
});

await test('a port in use is an error (exit 1), not a second server sharing it', async () => {
  const second = startServer(['--port', String(port)]);
  second.port.catch(() => {});
  const exit = await second.exited;
  assert.equal(exit.code, 1);
  assert.match(exit.stderr, /cannot listen on 127\.0\.0\.1:\d+/);
});

await test('--adapters: runtime LoRA answers and logprobs equal infer --adapters; logprobs differ from the base', async () => {
  const adapter = fs.mkdtempSync(path.join(os.tmpdir(), 'deploy-lora-'));
  execFileSync(VLMFORGE, ['generate', 'adapter', '--model', MODEL_DIR, '--output_dir', path.join(adapter, 'a'), '--r', '8',
    '--lora_alpha', '64'], { stdio: 'ignore' });
  const lora = startServer(['--adapters', path.join(adapter, 'a')]);
  const c = new OpenAI({ baseURL: `http://127.0.0.1:${await lora.port}/v1`, apiKey: 'none', maxRetries: 0 });
  const r = await c.chat.completions.create({ model: NAME, messages: user('Tell me a story'), temperature: 0, max_tokens: 24, logprobs: true });
  const withAdapter = infer('Tell me a story', 24, ['--adapters', path.join(adapter, 'a'), '--logprobs']);
  const base = infer('Tell me a story', 24, ['--logprobs']);
  const lps = (content) => content.map((t) => t.logprob);
  assert.equal(r.choices[0].message.content, withAdapter.response);
  assert.deepEqual(lps(r.choices[0].logprobs.content), lps(withAdapter.logprobs.content));
  assert.notDeepEqual(lps(r.choices[0].logprobs.content), lps(base.logprobs.content));  // the adapter is applied
  lora.child.kill('SIGTERM');
  assert.equal((await lora.exited).code, 0);
  fs.rmSync(adapter, { recursive: true });
});

// A second server: one sequence at a time and one waiting, so a third request is refused.
await test('Qwen2.5-VL: data: URL images answer exactly as infer --images, batched with text, under --max_pixels, and across devices', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'deploy-vl-'));
  const vl = path.join(work, 'vl');
  execFileSync(VLMFORGE, ['generate', 'checkpoint', '--preset', 'tiny-vl', '--output_dir', vl, '--dtype', 'float32',
    '--vocab_size', '151936', '--tokenizer', TOKENIZER], { stdio: 'ignore' });
  const image = gradientPng(100, 70);
  fs.writeFileSync(path.join(work, 'same.png'), image);
  const url = `data:image/png;base64,${image.toString('base64')}`;
  // 100x70 is 8 image tokens by default; --max_pixels 4000 shrinks it to 28x56, 2 tokens.
  const flags = ['--max_pixels', '4000'];
  const server = startServer([...flags, '--max_batch_size', '4'], vl);
  const c = new OpenAI({ baseURL: `http://127.0.0.1:${await server.port}/v1`, apiKey: 'none', maxRetries: 0 });
  const ask = (extra = {}) => c.chat.completions.create({ model: NAME, temperature: 0, max_tokens: 12, logprobs: true,
    messages: user([{ type: 'image_url', image_url: { url } }, { type: 'text', text: 'What is this?' }]), ...extra });
  const ref = infer('What is this?', 12, [...flags, '--images', path.join(work, 'same.png'), '--logprobs'], vl);
  const textRef = infer('Tell me a story', 12, [], vl);
  const [r, text] = await Promise.all([ask(), c.chat.completions.create({ model: NAME, messages: user('Tell me a story'),
    temperature: 0, max_tokens: 12 })]);
  assert.equal(r.choices[0].message.content, ref.response);
  assert.equal(r.usage.prompt_tokens, ref.prompt_tokens);
  assert.deepEqual(r.choices[0].logprobs.content.map((t) => t.logprob), ref.logprobs.content.map((t) => t.logprob));
  assert.equal(text.choices[0].message.content, textRef.response);
  const unbounded = infer('What is this?', 1, ['--images', path.join(work, 'same.png')], vl);
  assert.equal(unbounded.prompt_tokens - ref.prompt_tokens, 6);  // the flag is what sized the image
  // Again, streamed: the embeddings now come from the image cache, the answer is the same.
  let streamed = '';
  for await (const chunk of await ask({ stream: true, logprobs: false })) streamed += chunk.choices[0]?.delta?.content ?? '';
  assert.equal(streamed, ref.response);
  // Pixels that do not decode (the header is fine, the data cut short) are a 400 from the encoder.
  const cut = `data:image/png;base64,${image.subarray(0, 60).toString('base64')}`;
  await expectError(c.chat.completions.create({ model: NAME, messages: user([{ type: 'image_url', image_url: { url: cut } }]) }),
    400, (e) => assert.match(e.message, /cannot use the request's images/));
  server.child.kill('SIGTERM');
  assert.equal((await server.exited).code, 0);
  // The tower alone on cpu:2, the language model over cpu:0 and cpu:1: the same answer.
  const map = path.join(work, 'map.json');
  fs.writeFileSync(map, JSON.stringify({ 'model.embed_tokens': 'cpu:0', 'model.layers.0': 'cpu:0', 'model.layers.1': 'cpu:1',
    'model.norm': 'cpu:1', lm_head: 'cpu:1', visual: 'cpu:2' }));
  const placed = startServer([...flags, '--device_map', map, '--devices', 'cpu:0,cpu:1,cpu:2', '--max_memory', '256MiB',
    '--memory_report'], vl);
  const pc = new OpenAI({ baseURL: `http://127.0.0.1:${await placed.port}/v1`, apiKey: 'none', maxRetries: 0 });
  const p = await pc.chat.completions.create({ model: NAME, temperature: 0, max_tokens: 12, logprobs: true,
    messages: user([{ type: 'image_url', image_url: { url } }, { type: 'text', text: 'What is this?' }]) });
  assert.equal(p.choices[0].message.content, ref.response);
  assert.deepEqual(p.choices[0].logprobs.content.map((t) => t.logprob), ref.logprobs.content.map((t) => t.logprob));
  placed.child.kill('SIGTERM');
  const exit = await placed.exited;
  assert.equal(exit.code, 0, exit.stderr);
  assert.match(exit.stderr, /cpu:2: vision/, exit.stderr);
  fs.rmSync(work, { recursive: true });
});

await test('--device_map across three capped cpu devices answers like one device; /metrics has each device', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'deploy-map-'));
  const map = path.join(work, 'map.json');
  fs.writeFileSync(map, JSON.stringify({ 'model.embed_tokens': 'cpu:0', 'model.layers.0': 'cpu:1', 'model.layers.1': 'cpu:2',
    'model.norm': 'cpu:2', lm_head: 'cpu:0' }));
  const placed = startServer(['--device_map', map, '--devices', 'cpu:0,cpu:1,cpu:2', '--max_memory', '256MiB',
    '--max_batch_size', '4', '--memory_report']);
  const pbase = `http://127.0.0.1:${await placed.port}`;
  const c = new OpenAI({ baseURL: `${pbase}/v1`, apiKey: 'none', maxRetries: 0 });
  const queries = ['one', 'two words', 'a somewhat longer question here'];
  const replies = await Promise.all(queries.map((q) => c.chat.completions.create(
    { model: NAME, messages: user(q), temperature: 0, max_tokens: 16, logprobs: true })));
  queries.forEach((q, i) => {
    const ref = infer(q, 16, ['--logprobs']);
    assert.equal(replies[i].choices[0].message.content, ref.response, q);
    assert.deepEqual(replies[i].choices[0].logprobs.content.map((t) => t.logprob), ref.logprobs.content.map((t) => t.logprob), q);
  });
  for (const d of ['cpu:0', 'cpu:1', 'cpu:2']) {
    assert.ok(await metric(pbase, `vlmforge_device_memory_bytes{device="${d}",kind="peak"}`) > 0, d);
    assert.equal(await metric(pbase, `vlmforge_device_memory_bytes{device="${d}",kind="total"}`), 256 * 1024 * 1024, d);
  }
  placed.child.kill('SIGTERM');
  const exit = await placed.exited;
  assert.equal(exit.code, 0, exit.stderr);
  assert.match(exit.stderr, /\[device_map\] cpu:0: .*cpu:1: .*cpu:2: /);
  assert.equal((exit.stderr.match(/\[memory\] cpu:\d: peak/g) ?? []).length, 3, exit.stderr);
  fs.rmSync(work, { recursive: true });
});

await test('a full queue answers 429 with Retry-After', async () => {
  const small = startServer(['--max_batch_size', '1', '--max_queue', '1']);
  const sbase = `http://127.0.0.1:${await small.port}`;
  const c = new OpenAI({ baseURL: `${sbase}/v1`, apiKey: 'none', maxRetries: 0 });
  const long = () => c.chat.completions.create({ model: NAME, messages: user('long'), temperature: 0, max_tokens: 450 });
  const first = long();
  while (await metric(sbase, 'vlmforge_running_batch_size') < 1) await new Promise((r) => setTimeout(r, 10));
  const second = long();
  while (await metric(sbase, 'vlmforge_queue_depth') < 1) await new Promise((r) => setTimeout(r, 10));
  await expectError(long(), 429, (e) => assert.equal(e.headers['retry-after'], '1'));
  assert.equal((await first).choices[0].finish_reason, 'length');
  assert.equal((await second).choices[0].finish_reason, 'length');
  small.child.kill('SIGTERM');
  assert.equal((await small.exited).code, 0);
});

await test('SIGTERM stops accepting, finishes the stream in flight, and exits 0', async () => {
  const stream = await client.chat.completions.create({ model: NAME, messages: user('long'), temperature: 0, max_tokens: 200, stream: true });
  const it = stream[Symbol.asyncIterator]();
  await it.next();
  main.child.kill('SIGTERM');
  let finish = null;
  for (let r = await it.next(); !r.done; r = await it.next()) finish = r.value.choices[0]?.finish_reason ?? finish;
  assert.equal(finish, 'length');
  const exit = await main.exited;
  assert.equal(exit.code, 0, exit.stderr);
  await assert.rejects(fetch(`${base}/health`));
});

if (main.child.exitCode === null) main.child.kill('SIGKILL');
const failed = results.filter(([, r]) => r !== 'ok');
console.log(`${results.length - failed.length}/${results.length} passed`);
process.exit(failed.length ? 1 : 0);
