// Closed-loop load on `vlmforge deploy` over loopback: CLIENTS workers each send chat completions
// back to back for DURATION seconds (half streamed with include_usage, half not; seeded sampling),
// honouring Retry-After on 429. Prints one JSON object: requests/s, latency p50/p99, time to first
// token (streamed), generated tokens/s, and errors by kind (429s counted apart as deliberate).
// Usage: BASE=http://127.0.0.1:PORT MODEL=name CLIENTS=32 DURATION=30 MAX_TOKENS=32 node bench/server_load.mjs
const base = process.env.BASE;
const model = process.env.MODEL;
const clients = Number(process.env.CLIENTS ?? 32);
const duration = Number(process.env.DURATION ?? 30) * 1000;
const maxTokens = Number(process.env.MAX_TOKENS ?? 32);
const topics = ['the sea', 'a small robot', 'bread', 'mountains at night', 'a lost key', 'trains', 'the moon', 'rain'];

const latencies = [], ttfts = [];
let ok = 0, tokens = 0, rejected = 0;
const errors = {};
const fail = (kind) => { errors[kind] = (errors[kind] ?? 0) + 1; };

async function one(worker, i) {
  const stream = (worker + i) % 2 === 1;
  const body = {
    model, messages: [{ role: 'user', content: `Write about ${topics[(worker * 7 + i) % topics.length]} (${worker}.${i})` }],
    max_tokens: maxTokens, temperature: 0.8, top_p: 0.95, seed: worker * 1000 + i, stream,
    ...(stream ? { stream_options: { include_usage: true } } : {}),
  };
  const start = performance.now();
  const res = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  if (res.status === 429) {
    await res.text();
    rejected++;
    await new Promise((r) => setTimeout(r, 1000 * Number(res.headers.get('retry-after') ?? 1)));
    return;
  }
  if (res.status !== 200) { fail(`http_${res.status}`); await res.text(); return; }
  let usage;
  if (!stream) {
    usage = (await res.json()).usage;
  } else {
    const decoder = new TextDecoder();
    let buffer = '', first = true, done = false;
    for await (const bytes of res.body) {
      buffer += decoder.decode(bytes, { stream: true });
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith('data: ')) { fail('bad_event'); continue; }
        const data = event.slice(6);
        if (data === '[DONE]') { done = true; continue; }
        const chunk = JSON.parse(data);
        if (chunk.error) fail('stream_error');
        if (first && chunk.choices?.[0]?.delta?.content) { ttfts.push(performance.now() - start); first = false; }
        if (chunk.usage) usage = chunk.usage;
      }
    }
    if (!done) { fail('stream_without_done'); return; }
  }
  if (!usage) { fail('no_usage'); return; }
  latencies.push(performance.now() - start);
  tokens += usage.completion_tokens;
  ok++;
}

async function worker(w, until) {
  for (let i = 0; performance.now() < until; ++i) {
    try { await one(w, i); } catch (e) { fail(e.cause?.code ?? e.name); }
  }
}

const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : null; };
const t0 = performance.now();
await Promise.all(Array.from({ length: clients }, (_, w) => worker(w, t0 + duration)));
const seconds = (performance.now() - t0) / 1000;
console.log(JSON.stringify({
  clients, seconds: +seconds.toFixed(2), max_tokens: maxTokens, ok, rejected_429: rejected, errors,
  requests_per_s: +(ok / seconds).toFixed(2), tokens_per_s: +(tokens / seconds).toFixed(1),
  latency_ms: { p50: Math.round(pct(latencies, 0.5)), p99: Math.round(pct(latencies, 0.99)) },
  ttft_ms_streamed: { p50: Math.round(pct(ttfts, 0.5)), p99: Math.round(pct(ttfts, 0.99)) },
}));
