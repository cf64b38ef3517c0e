// bridge's TF.js runner, the JavaScript side (bridge/runtimes/tfjs_runner.py starts it).
//
//   node run.js MODEL_DIR BACKEND        BACKEND: cpu or wasm
//
// It loads MODEL_DIR/model.json and the weight files it lists (the Python side has checked that
// they lie inside MODEL_DIR) from memory, then answers requests on stdin, one per line of JSON
// followed by the raw bytes the line announces; each answer is one line of JSON followed by its
// bytes. Requests:
//   {"op": "run", "feeds": [{"name", "dtype", "shape", "bytes"}], "outputs": [node names]}
//   {"op": "time", ...the same..., "warmup": N, "runs": M}  -> {"ns": [...]}: latency measured here
// Stdin closing ends the process, so it never outlives the Python runner.
'use strict';

const fs = require('fs');
const path = require('path');

const [modelDir, backend] = process.argv.slice(2);
const log = (...args) => process.stderr.write(args.join(' ') + '\n');
console.log = log;  // TF.js greets on stdout; stdout carries answers only
console.warn = log;

const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const tfconv = require('@tensorflow/tfjs-converter');

const ARRAYS = {float32: Float32Array, int32: Int32Array, bool: Uint8Array};

async function load() {
  if (backend === 'wasm') {
    const wasm = require('@tensorflow/tfjs-backend-wasm');
    wasm.setWasmPaths(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm')) + path.sep);
  }
  if (!(await tf.setBackend(backend))) throw new Error(`the ${backend} backend did not start`);
  await tf.ready();
  const json = JSON.parse(fs.readFileSync(path.join(modelDir, 'model.json'), 'utf8'));
  const specs = [];
  const shards = [];
  for (const group of json.weightsManifest) {
    specs.push(...group.weights);
    for (const name of group.paths) shards.push(fs.readFileSync(path.join(modelDir, name)));
  }
  const all = Buffer.concat(shards);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  return tfconv.loadGraphModel(tf.io.fromMemory({modelTopology: json.modelTopology, weightSpecs: specs, weightData}));
}

function tensors(feeds, data) {
  const named = {};
  let offset = 0;
  for (const feed of feeds) {
    const bytes = data.subarray(offset, offset + feed.bytes);
    offset += feed.bytes;
    const copy = new Uint8Array(bytes).buffer;  // aligned, owned
    const values = feed.dtype === 'bool' ? new Uint8Array(copy) : new ARRAYS[feed.dtype](copy);
    named[feed.name] = tf.tensor(values, feed.shape, feed.dtype);
  }
  return named;
}

// A graph with control flow (an LSTM's while loop: Enter, Exit, Merge) cannot run synchronously;
// TF.js says so when execute() is tried, and executeAsync() runs it from then on.
let dynamic = false;

async function execute(model, feeds, outputs) {
  let result;
  if (!dynamic) {
    try {
      result = model.execute(feeds, outputs);
    } catch (err) {
      if (!String(err && err.message).includes('executeAsync')) throw err;
      dynamic = true;
    }
  }
  if (dynamic) result = await model.executeAsync(feeds, outputs);
  const list = Array.isArray(result) ? result : [result];
  const values = await Promise.all(list.map((t) => t.data()));
  return {list, values};
}

async function answer(model, request, data) {
  const feeds = tensors(request.feeds, data);
  try {
    if (request.op === 'time') {
      for (let i = 0; i < request.warmup; i++) tf.dispose((await execute(model, feeds, request.outputs)).list);
      const ns = [];
      for (let i = 0; i < request.runs; i++) {
        const start = process.hrtime.bigint();
        const {list} = await execute(model, feeds, request.outputs);  // to the values on the host
        ns.push(Number(process.hrtime.bigint() - start));
        tf.dispose(list);
      }
      return [{ns}, []];
    }
    const {list, values} = await execute(model, feeds, request.outputs);
    const header = list.map((t, i) => ({name: request.outputs[i], dtype: t.dtype, shape: t.shape,
                                        bytes: values[i].byteLength}));
    tf.dispose(list);
    return [{outputs: header}, values.map((v) => Buffer.from(v.buffer, v.byteOffset, v.byteLength))];
  } finally {
    tf.dispose(Object.values(feeds));
  }
}

function reply(header, buffers) {
  process.stdout.write(JSON.stringify(header) + '\n');
  for (const buffer of buffers) process.stdout.write(buffer);
}

async function main() {
  let model;
  try {
    model = await load();
    reply({ready: true, backend: tf.getBackend()}, []);
  } catch (error) {
    reply({error: `${error.name}: ${error.message}`}, []);
    process.exit(1);
  }
  let pending = Buffer.alloc(0);
  let busy = Promise.resolve();
  process.stdin.on('data', (chunk) => {
    pending = Buffer.concat([pending, chunk]);
    for (;;) {
      const newline = pending.indexOf(10);
      if (newline < 0) return;
      const request = JSON.parse(pending.subarray(0, newline).toString('utf8'));
      const size = request.feeds.reduce((sum, feed) => sum + feed.bytes, 0);
      if (pending.length < newline + 1 + size) return;
      const data = Buffer.from(pending.subarray(newline + 1, newline + 1 + size));
      pending = pending.subarray(newline + 1 + size);
      busy = busy.then(() => answer(model, request, data)
        .then(([header, buffers]) => reply(header, buffers))
        .catch((error) => reply({error: `${error.name}: ${error.message}`}, [])));
    }
  });
  process.stdin.on('end', () => busy.then(() => process.exit(0)));
}

main();
