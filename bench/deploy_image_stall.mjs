// Does a request's image encoding stall the decode steps of the sequences already running?
// A streamed text answer is timed token by token (the gap between chunks is one decode step) with
// nothing else running, then again while image requests arrive; the image requests are encoded on
// their HTTP threads, so the stream should keep going (slower, since they share the cores) rather
// than stop for a whole encode. Prints the stream's median and largest gaps in both runs next to the
// image requests' latency. Uses node's fetch only (no npm packages).
// Usage: node bench/deploy_image_stall.mjs VLMFORGE_BINARY VL_MODEL_DIR [IMAGE_SIDE=1400] [THREADS=2]
import { spawn } from 'node:child_process';
import zlib from 'node:zlib';

const [vlmforge, model, sideArg, threadsArg] = process.argv.slice(2);
if (!vlmforge || !model) {
  console.error('usage: node deploy_image_stall.mjs VLMFORGE_BINARY VL_MODEL_DIR [IMAGE_SIDE] [THREADS]');
  process.exit(2);
}
const side = Number(sideArg ?? 1400);
const threads = String(threadsArg ?? 2);

// An 8-bit RGB PNG (a gradient, so it compresses but is not flat); `seed` makes each image distinct
// so none comes from the server's embedding cache.
function png(width, height, seed) {
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
  ihdr[8] = 8;
  ihdr[9] = 2;
  const stride = width * 3 + 1;
  const raw = Buffer.alloc(stride * height);
  for (let y = 0; y < height; ++y)
    for (let x = 0; x < width; ++x) {
      const o = y * stride + 1 + x * 3;
      raw[o] = x + seed;
      raw[o + 1] = y;
      raw[o + 2] = (x * y + seed) >> 4;
    }
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]), chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

const server = spawn(vlmforge, ['deploy', '--model', model, '--port', '0', '--served_model_name', 'm', '--threads', threads,
  '--max_batch_size', '4', '--max_model_len', '8192', '--max_body_mb', '64'], { stdio: ['ignore', 'pipe', 'inherit'] });
const port = await new Promise((resolve, reject) => {
  let out = '';
  server.stdout.on('data', (d) => {
    out += d;
    const m = out.match(/http:\/\/127\.0\.0\.1:(\d+)/);
    if (m) resolve(Number(m[1]));
  });
  server.on('exit', (code) => reject(new Error(`server exited ${code}`)));
});
const url = `http://127.0.0.1:${port}/v1/chat/completions`;
const post = (body) => fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

// Arrival times (ms) of a streamed answer's chunks.
async function streamTimes(maxTokens) {
  const res = await post({ model: 'm', messages: [{ role: 'user', content: 'Tell me a long story.' }], temperature: 0,
    max_tokens: maxTokens, stream: true });
  const times = [];
  const decoder = new TextDecoder();
  for await (const piece of res.body) {
    const text = decoder.decode(piece);
    for (let i = text.indexOf('"content"'); i >= 0; i = text.indexOf('"content"', i + 1)) times.push(performance.now());
  }
  return times;
}
function gaps(times, from = -Infinity, to = Infinity) {
  const out = [];
  for (let i = 1; i < times.length; ++i) if (times[i] >= from && times[i - 1] <= to) out.push(times[i] - times[i - 1]);
  return out.sort((a, b) => a - b);
}
const median = (xs) => xs[Math.floor(xs.length / 2)];

async function imageRequest(seed) {
  const data = png(side, side, seed).toString('base64');
  const start = performance.now();
  const res = await post({ model: 'm', temperature: 0, max_tokens: 1, messages: [{ role: 'user', content: [
    { type: 'image_url', image_url: { url: `data:image/png;base64,${data}` } }, { type: 'text', text: 'What is this?' }] }] });
  const body = await res.json();
  if (!res.ok) throw new Error(JSON.stringify(body));
  return { start, end: performance.now(), prompt_tokens: body.usage.prompt_tokens };
}

await imageRequest(255);  // warm-up: first-touch of the weights, thread pools
const alone = gaps(await streamTimes(400));
const stream = streamTimes(400);
await new Promise((r) => setTimeout(r, 300));
const images = [];
for (let seed = 0; seed < 3; ++seed) images.push(await imageRequest(seed));
const withImages = await stream;
const during = gaps(withImages, images[0].start, images[images.length - 1].end);
server.kill('SIGTERM');
const fmt = (x) => x.toFixed(1);
console.log(JSON.stringify({
  image_side: side, threads: Number(threads), image_prompt_tokens: images[0].prompt_tokens,
  image_request_ms: images.map((i) => fmt(i.end - i.start)),
  stream_alone_gap_ms: { median: fmt(median(alone)), max: fmt(alone[alone.length - 1]) },
  stream_during_images_gap_ms: { median: fmt(median(during)), max: fmt(during[during.length - 1]), steps: during.length },
  max_gap_over_image_request: fmt(during[during.length - 1] / Math.min(...images.map((i) => i.end - i.start))),
}));
