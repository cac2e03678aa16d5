// Write the Llama 3 vocabulary of llama3-tokenizer-js as a tiktoken rank
// file ("<base64 bytes> <id>" per line), and encode files with it, for the
// differential test.  Nothing it writes is committed (Meta's licence).
//   node llama3-ranks.js PKGDIR ranks OUT.tiktoken
//   node llama3-ranks.js PKGDIR encode FILE...   (one line of ids per file)
//   node llama3-ranks.js PKGDIR encode-to OUTDIR FILE...
//       the same line written to OUTDIR/<basename of FILE>.ids, one each
// Files are decoded as strict UTF-8 (invalid UTF-8 is an error, exit 3).
'use strict';
const fs = require('fs');
const path = require('path');
const [pkg, mode, ...args] = process.argv.slice(2);
const { llama3Tokenizer: tok } = require(path.join(
    path.resolve(pkg), 'bundle', 'commonjs-llama3-tokenizer-with-baked-data.cjs'));

// GPT-2's byte <-> printable character map used by byte-level BPE.
function unicodeToBytes() {
    const bs = [];
    for (let b = 33; b <= 126; b++) bs.push(b);
    for (let b = 161; b <= 172; b++) bs.push(b);
    for (let b = 174; b <= 255; b++) bs.push(b);
    const cs = bs.slice();
    let n = 0;
    for (let b = 0; b < 256; b++)
        if (!bs.includes(b)) { bs.push(b); cs.push(256 + n); n++; }
    const map = new Map();
    bs.forEach((b, i) => map.set(String.fromCodePoint(cs[i]), b));
    return map;
}

if (mode === 'ranks') {
    const u2b = unicodeToBytes();
    const lines = [];
    tok.vocabById.forEach((s, id) => {
        if (/^<\|.*\|>$/.test(s) && id >= 128000) return; // special tokens
        const bytes = [];
        for (const ch of s) {
            const b = u2b.get(ch);
            if (b === undefined) throw new Error(`token ${id}: ${JSON.stringify(s)}`);
            bytes.push(b);
        }
        lines.push(Buffer.from(bytes).toString('base64') + ' ' + id);
    });
    fs.writeFileSync(args[0], lines.join('\n') + '\n');
} else if (mode === 'encode' || mode === 'encode-to') {
    const never = /(?!)/g; // parse no special token: text is ordinary text
    const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
    const outdir = mode === 'encode-to' ? args.shift() : null;
    for (const f of args) {
        let text;
        try {
            text = utf8.decode(fs.readFileSync(f));
        } catch (e) {
            process.stderr.write(`llama3-ranks: ${f}: ${e.message}\n`);
            process.exit(3);
        }
        const line = tok.encode(text, { bos: false, eos: false, specialTokenRegex: never })
            .join(' ') + '\n';
        if (outdir === null) process.stdout.write(line);
        else fs.writeFileSync(path.join(outdir, path.basename(f) + '.ids'), line);
    }
} else {
    process.stderr.write('usage: llama3-ranks.js PKGDIR ranks OUT | encode FILE... | encode-to OUTDIR FILE...\n');
    process.exit(2);
}
