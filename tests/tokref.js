#!/usr/bin/env node
// Reference token ids for the differential tests of hallmark's tokenizer:
// tiktoken@1.0.22 (OpenAI's Rust BPE compiled to WASM) for the tiktoken
// presets, @huggingface/tokenizers@0.2.0 (HF's pure-JS tokenizers) for
// Hugging Face tokenizer.json files.
//
// REF is a preset (r50k_base, p50k_base, cl100k_base, o200k_base: tiktoken's
// encode_ordinary, special-token text is ordinary text) or the path of a
// tokenizer.json (HF's encode(text, {add_special_tokens: false}): added
// tokens in the text ARE split out, as HF does by default; a
// tokenizer_config.json next to it is used when present).
//
//   node tokref.js [--cache DIR] REF FILE...
//       one line per FILE ('-' is standard input): the ids separated by
//       single spaces (an empty line for an empty file) -- the format of
//       'hallmark tokenize --ids'.
//   node tokref.js [--cache DIR] --outdir OUT REF FILE...
//       the same, but written to OUT/<basename of FILE>.ids, one file each.
//   node tokref.js [--cache DIR] --explain VOCAB TEXT REF.ids GOT.ids
//       describe the first difference between two id lists of TEXT: the
//       token index, byte offset, the text there and both sides' tokens.
//       VOCAB gives the bytes of each id: a preset (through tiktoken), a
//       tiktoken rank file (*.tiktoken) or a tokenizer.json.
//   node tokref.js [--cache DIR] --bench N REF FILE
//       encode FILE once untimed (warm-up), then N times: print the MB/s of
//       those encode calls alone (reading and loading excluded), as
//       'hallmark tokenize --bench N' does.
//
// Text is decoded as strict UTF-8: invalid UTF-8 is an error (JavaScript
// would otherwise substitute U+FFFD and the ids would not be those of the
// file's bytes).  A byte-order mark is kept.
//
// The packages are loaded from DIR (--cache, else $HM_TOKCACHE, else
// ~/.cache/hallmark-test) as installed by tokenizer-fetch.sh: tiktoken from
// DIR/node/node_modules/tiktoken, @huggingface/tokenizers from DIR/hf-js.
// Exit status: 0 ok, 1 --explain found a difference, 2 usage, 3 bad input,
// 99 wrong or broken reference.
"use strict";
const fs = require("fs");
const path = require("path");
const os = require("os");

const TIKTOKEN_VERSION = "1.0.22";
const HFJS_VERSION = "0.2.0";
const PRESETS = ["r50k_base", "p50k_base", "cl100k_base", "o200k_base"];

function die(code, msg) {
  process.stderr.write("tokref: " + msg + "\n");
  process.exit(code);
}
function usage() {
  die(2, "usage: tokref.js [--cache DIR] [--outdir OUT | --explain | --bench N] REF FILE...");
}

const args = process.argv.slice(2);
let cache = process.env.HM_TOKCACHE || path.join(os.homedir(), ".cache", "hallmark-test");
let mode = "ids", outdir = null, benchN = 0;
while (args.length && args[0].startsWith("--")) {
  const a = args.shift();
  if (a === "--cache" && args.length) cache = args.shift();
  else if (a === "--outdir" && args.length) { mode = "outdir"; outdir = args.shift(); }
  else if (a === "--explain") mode = "explain";
  else if (a === "--bench" && args.length) {
    mode = "bench"; benchN = parseInt(args.shift(), 10);
    if (!(benchN >= 1)) usage();
  } else if (a === "--") break;
  else usage();
}
if (args.length < 1) usage();
const ref = args.shift();
const kind = PRESETS.includes(ref) ? "tiktoken" : ref.endsWith(".json") ? "hf" :
  ref.endsWith(".tiktoken") && mode === "explain" ? "ranks" : null;
if (kind === null)
  die(2, "REF '" + ref + "' is neither a preset (" + PRESETS.join(", ") + ") nor a tokenizer.json" +
    (mode === "explain" ? " nor a .tiktoken rank file" : ""));

function loadPackage(dir, want, main) {
  let version, mod;
  try {
    version = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")).version;
    mod = require(path.join(dir, main));
  } catch (e) {
    die(99, "cannot load " + dir + " (run tests/tokenizer-fetch.sh): " + e.message);
  }
  if (version !== want) die(99, dir + " is version " + version + ", expected " + want);
  return mod;
}

// encode(text) -> array of ids; bytesOf(id) -> Buffer or null; free()
let encode, bytesOf, free = () => {};
if (kind === "tiktoken") {
  const tiktoken = loadPackage(path.join(path.resolve(cache), "node", "node_modules", "tiktoken"),
    TIKTOKEN_VERSION, "");
  if (typeof tiktoken.get_encoding !== "function") die(99, "tiktoken has no get_encoding()");
  const enc = tiktoken.get_encoding(ref);
  if (typeof enc.encode_ordinary !== "function") die(99, "tiktoken has no encode_ordinary()");
  encode = (text) => enc.encode_ordinary(text);
  bytesOf = (id) => { try { return Buffer.from(enc.decode_single_token_bytes(id)); } catch (e) { return null; } };
  free = () => enc.free();
  // Special tokens must be ordinary text: "<|endoftext|>" is several tokens
  // that decode back to the same bytes, never the single special id.
  const eot = "<|endoftext|>";
  const ids = enc.encode_ordinary(eot);
  const back = Buffer.from(enc.decode(ids)).toString("utf8");
  if (ids.length < 2 || back !== eot)
    die(99, "encode_ordinary('" + eot + "') gave [" + Array.from(ids) + "]: special tokens are not ordinary text");
} else if (kind === "hf") {
  let json, config = {};
  try {
    json = JSON.parse(fs.readFileSync(ref, "utf8"));
    const cf = path.join(path.dirname(ref), "tokenizer_config.json");
    if (fs.existsSync(cf)) config = JSON.parse(fs.readFileSync(cf, "utf8"));
  } catch (e) {
    die(3, ref + ": " + e.message);
  }
  bytesOf = vocabBytes(json);
  if (mode !== "explain") {
    const { Tokenizer } = loadPackage(path.join(path.resolve(cache), "hf-js", "package"),
      HFJS_VERSION, "dist/tokenizers.cjs");
    const tok = new Tokenizer(json, config);
    encode = (text) => tok.encode(text, { add_special_tokens: false }).ids;
  }
} else {
  const byId = new Map();
  for (const line of fs.readFileSync(ref, "utf8").split("\n")) {
    const [b64, id] = line.split(" ");
    if (id !== undefined) byId.set(Number(id), Buffer.from(b64, "base64"));
  }
  bytesOf = (id) => byId.get(id) || null;
}

// id -> bytes of a byte-level BPE tokenizer.json (GPT-2's byte <-> char map).
function vocabBytes(json) {
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const u2b = new Map();
  bs.forEach((b) => u2b.set(String.fromCodePoint(b), b));
  for (let b = 0, n = 0; b < 256; b++)
    if (!bs.includes(b)) u2b.set(String.fromCodePoint(256 + n++), b);
  const byId = new Map();
  for (const [s, id] of Object.entries((json.model && json.model.vocab) || {})) {
    const out = [];
    for (const ch of s) out.push(u2b.has(ch) ? u2b.get(ch) : 0x3f);
    byId.set(id, Buffer.from(out));
  }
  for (const t of json.added_tokens || []) byId.set(t.id, Buffer.from(t.content, "utf8"));
  return (id) => byId.get(id) || null;
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
function readBytes(file) {
  try {
    return file === "-" ? fs.readFileSync(0) : fs.readFileSync(file);
  } catch (e) {
    die(3, file + ": " + e.message);
  }
}
function readText(file) {
  const bytes = readBytes(file);
  try {
    return { bytes, text: utf8.decode(bytes) };
  } catch (e) {
    die(3, file + ": not valid UTF-8 (only valid UTF-8 can be compared)");
  }
}
function idsLine(file) {
  return Array.from(encode(readText(file).text)).join(" ") + "\n";
}

// Bytes as readable text: valid UTF-8 as is, other bytes as \xNN, in quotes.
function show(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length;) {
    const b = bytes[i];
    const n = b < 0x80 ? 1 : b >= 0xf0 && b < 0xf5 ? 4 : b >= 0xe0 ? 3 : b >= 0xc2 && b < 0xe0 ? 2 : 0;
    let ch = null;
    if (n > 0 && i + n <= bytes.length) {
      try { ch = utf8.decode(bytes.subarray(i, i + n)); } catch (e) { ch = null; }
    }
    if (ch === null) { s += "\\x" + b.toString(16).padStart(2, "0"); i += 1; continue; }
    i += n;
    if (ch === "\\" || ch === '"') s += "\\" + ch;
    else if (ch === "\n") s += "\\n";
    else if (ch === "\r") s += "\\r";
    else if (ch === "\t") s += "\\t";
    else if (ch.length === 1 && (ch.charCodeAt(0) < 0x20 || ch.charCodeAt(0) === 0x7f))
      s += "\\x" + ch.charCodeAt(0).toString(16).padStart(2, "0");
    else s += ch;
  }
  return '"' + s + '"';
}
function tokenBytes(id) {
  return bytesOf(id);
}
function readIds(file) {
  let t;
  try { t = fs.readFileSync(file, "utf8").trim(); } catch (e) { die(3, file + ": " + e.message); }
  return t === "" ? [] : t.split(/\s+/).map(Number);
}

if (mode === "ids") {
  if (args.length < 1) usage();
  for (const f of args) process.stdout.write(idsLine(f));
} else if (mode === "outdir") {
  if (args.length < 1) usage();
  const seen = new Set();
  for (const f of args) {
    const out = path.join(outdir, path.basename(f) + ".ids");
    if (seen.has(out)) die(2, "two inputs named " + path.basename(f));
    seen.add(out);
    const tmp = out + ".tmp" + process.pid;
    fs.writeFileSync(tmp, idsLine(f));
    fs.renameSync(tmp, out);
  }
} else if (mode === "explain") {
  if (args.length !== 3) usage();
  const { bytes } = readText(args[0]);
  const refIds = readIds(args[1]), got = readIds(args[2]);
  let i = 0;
  while (i < refIds.length && i < got.length && refIds[i] === got[i]) i++;
  if (i === refIds.length && i === got.length) {
    console.log("no difference (" + refIds.length + " tokens)");
    process.exit(0);
  }
  let off = 0;
  for (let k = 0; k < i; k++) {
    const b = tokenBytes(refIds[k]);
    if (b === null) die(3, "reference id " + refIds[k] + " at token " + k + " is not in " + ref);
    off += b.length;
  }
  const lo = Math.max(0, off - 40), hi = Math.min(bytes.length, off + 40);
  console.log("first difference at token " + i + " (reference " + refIds.length + " tokens, hallmark " +
    got.length + "), byte offset " + off + " of " + bytes.length);
  console.log("  text: " + show(bytes.subarray(lo, off)) + " >>> " + show(bytes.subarray(off, hi)));
  for (const [name, ids] of [["reference", refIds], ["hallmark", got]]) {
    const parts = [];
    for (let k = Math.max(0, i - 3); k < Math.min(ids.length, i + 6); k++) {
      const b = tokenBytes(ids[k]);
      parts.push((k === i ? ">>>" : "") + ids[k] + ":" + (b ? show(b) : "?"));
    }
    console.log("  " + name.padEnd(9) + " " + parts.join(" "));
  }
  process.exitCode = 1;
} else if (mode === "bench") {
  if (args.length !== 1) usage();
  const { bytes, text } = readText(args[0]);
  let n = encode(text).length; // warm-up (WASM and JIT compilation), untimed
  const t0 = process.hrtime.bigint();
  for (let r = 0; r < benchN; r++) n = encode(text).length;
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write((bytes.length * benchN / secs / 1e6).toFixed(2) + " MB/s (" + bytes.length +
    " bytes, " + n + " tokens, " + benchN + " runs)\n");
}
free();
