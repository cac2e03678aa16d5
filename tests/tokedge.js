#!/usr/bin/env node
// Edge cases for the differential tests of hallmark's tokenizer, written as
// one small UTF-8 file each (deterministic: the same bytes on every run).
//   node tokedge.js OUTDIR            the edge-case files, OUTDIR/edge-*.txt
//   node tokedge.js --nosplit N OUT   N bytes of one letters-only word
//                                     (no pre-tokenizer split point at all)
//   node tokedge.js --brown-plain BROWNDIR OUTDIR
//                                     the Brown corpus as plain text, one
//                                     file per genre (brown-GENRE.txt): tags
//                                     stripped, punctuation re-attached
"use strict";
const fs = require("fs");
const path = require("path");

// A fixed xorshift generator: the files must not change between runs.
let seed = 0x2545f491;
function rnd(n) {
  seed ^= seed << 13; seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5; seed >>>= 0;
  return seed % n;
}
function pick(arr, n, sep) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(arr[rnd(arr.length)]);
  return out.join(sep === undefined ? "" : sep);
}
const letters = "abcdefghijklmnopqrstuvwxyz";
function word(len) {
  let s = "";
  for (let i = 0; i < len; i++) s += letters[rnd(26)];
  return s;
}

const args = process.argv.slice(2);
if (args[0] === "--nosplit" && args.length === 3) {
  const n = parseInt(args[1], 10);
  // Mostly one repeated letter (the worst case for naive merging) with
  // stretches of random letters, so that many different merges apply.
  let s = "";
  while (s.length < n) s += rnd(4) === 0 ? word(64) : "a".repeat(64);
  fs.writeFileSync(args[2], s.slice(0, n));
  process.exit(0);
}
if (args[0] === "--brown-plain" && args.length === 3) {
  const dir = args[1], outdir = args[2];
  const byGenre = new Map();
  for (const line of fs.readFileSync(path.join(dir, "cats.txt"), "utf8").split("\n")) {
    const [file, genre] = line.trim().split(/\s+/);
    if (!genre) continue;
    if (!byGenre.has(genre)) byGenre.set(genre, []);
    byGenre.get(genre).push(file);
  }
  const noSpaceBefore = /^(?:[.,;:!?)\]}%]|''|'s|'|n't|'ll|'re|'ve|'d|'m)$/;
  fs.mkdirSync(outdir, { recursive: true });
  for (const [genre, list] of byGenre) {
    const lines = [];
    for (const f of list) {
      for (const raw of fs.readFileSync(path.join(dir, f), "latin1").split("\n")) {
        const words = raw.trim().split(/\s+/).filter((w) => w !== "")
          .map((w) => { const k = w.lastIndexOf("/"); return k > 0 ? w.slice(0, k) : w; });
        if (words.length === 0) continue;
        let s = "", glue = true;
        for (const w0 of words) {
          const w = w0 === "``" || w0 === "''" ? '"' : w0;
          if (!glue && !noSpaceBefore.test(w0)) s += " ";
          s += w;
          glue = w0 === "``" || w0 === "(" || w0 === "[";
        }
        lines.push(s);
      }
      lines.push("");
    }
    fs.writeFileSync(path.join(outdir, "brown-" + genre.replace(/[^a-z_]/g, "_") + ".txt"), lines.join("\n"));
  }
  process.exit(0);
}
if (args.length !== 1) {
  process.stderr.write("usage: tokedge.js OUTDIR | --nosplit N OUT | --brown-plain BROWNDIR OUTDIR\n");
  process.exit(2);
}
const out = args[0];
const files = {};
const add = (name, text) => { files[name] = text; };

// ---- whitespace
{
  let s = "";
  for (let n = 1; n <= 70; n++) s += "a" + " ".repeat(n) + "b" + " ".repeat(n) + "\n";
  add("ws-spaces", s);
  s = "";
  for (let n = 1; n <= 40; n++)
    s += "x" + " ".repeat(n) + "\n" + " ".repeat(n) + "\n\n" + "\t".repeat(n % 7) + " ".repeat(n) + "y\n";
  add("ws-lines", s + "   ");
  add("ws-only", " ".repeat(5000) + "\n".repeat(300) + " \n".repeat(200) + "\t".repeat(100));
  add("ws-long-run", "start" + " ".repeat(20000) + "end" + " ".repeat(20000));
  add("ws-unicode",
    ["\u00a0", "\u1680", "\u2000", "\u2002", "\u2003", "\u2007", "\u2009", "\u200a", "\u2028", "\u2029",
     "\u202f", "\u205f", "\u3000", "\u0085", "\u000b", "\u000c", "\u200b", "\u180e", "\ufeff"]
      .map((w) => "a" + w + "b " + w + w + "c" + w + "\n" + w).join(" "));
  add("crlf", "line one\r\nline two\r\n\r\n  \r\nend\r\rlone CR\r \r\n\n\r\n\r\n\r\n" +
    "words,\r\n\r\n!!\r\n\r\n  x\r\n".repeat(20) + "\n\r");
  add("tabs", "\tx\t\ty \t \t\n\t\t\tz\n" + "col1\tcol2\t\tcol3\n".repeat(30) + "\t".repeat(50) + "end");
}
// ---- digits
{
  let s = "";
  for (let n = 1; n <= 40; n++) s += "1234567890".repeat(5).slice(0, n) + " x" + "9".repeat(n) + "y\n";
  s += "3.14159 1,000,000 2024-01-31 12:30:45 $1234.56 -42 +7 1e10 0x1F 007\n";
  s += "\u0661\u0662\u0663\u0664\u0665 \u0967\u0968\u0969\u096a \uff11\uff12\uff13\uff14 \u00b2\u00b3\u00b9 \u2160\u2161\u216b \u2460\u2461 \u00bd\u00bc \u{1d7ce}\n";
  s += "a1b22c333d4444e55555 x1y22z333\n" + "0".repeat(10000);
  add("digits", s);
}
// ---- contractions (case-insensitive in cl100k and Llama 3)
{
  const c = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'M", "'LL", "'lL", "'D",
    "\u2019s", "\u2019LL", "'x", "''s", "'", "'''"];
  let s = "";
  for (const x of c) s += "it" + x + " IT" + x + " " + x + " " + x + x + "\n";
  s += "don't I'M he'S we'LL they'Re you'VE I'D WE'RE Y'ALL o'clock rock'n'roll 'tis\n";
  s += "\"It's\" ('s) ['ll] 'S's 1's 2'S :'d\n";
  add("contractions", s);
}
// ---- emoji, ZWJ sequences, flags, keycaps, variation selectors
add("emoji",
  "\u{1F44D}\u{1F3FD} \u{1F468}\u200D\u{1F469}\u200D\u{1F467}\u200D\u{1F466} \u{1F3F3}\uFE0F\u200D\u{1F308} " +
  "\u{1F1EB}\u{1F1F7}\u{1F1EF}\u{1F1F5} 1\uFE0F\u20E3 #\uFE0F\u20E3 a\u{1F600}b \u{1F600}\u{1F600}\u{1F600}\n" +
  "\u2764\uFE0F \u263A \u{1F9D1}\u{1F3FF}\u200D\u{1F4BB} \u{1FAE0} \u{1F47E}!!\n" +
  pick(["\u{1F600}", "\u{1F389}", "\u{1F680}", "\u2728", "\u{1F44D}\u{1F3FB}", "\u200D", " ", "ok"], 3000));
// ---- scripts
add("scripts",
  "\u4F60\u597D\uFF0C\u4E16\u754C\u3002\u65E5\u672C\u8A9E\u306E\u30C6\u30AD\u30B9\u30C8\u3067\u3059\u3002" +
  "\u30AB\u30BF\u30AB\u30CA \uFF8A\uFF9D\uFF76\uFF78\n" +
  "\u0645\u0631\u062D\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645\u060C \u0643\u064E\u062A\u064E\u0628\u064E \u0661\u0662\n" +
  "\u0928\u092E\u0938\u094D\u0924\u0947 \u0926\u0941\u0928\u093F\u092F\u093E\u0964 \u0915\u094D\u0937\u0924\u094D\u0930\u093F\u092F\n" +
  "\uC548\uB155\uD558\uC138\uC694 \uC138\uACC4! \u1100\u1161\u11A8\n" +
  "\u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439, \u043C\u0438\u0440! \u039A\u03B1\u03BB\u03B7\u03BC\u03AD\u03C1\u03B1 \u03BA\u03CC\u03C3\u03BC\u03B5\n" +
  "\u05E9\u05DC\u05D5\u05DD \u05E2\u05D5\u05DC\u05DD \u0E2A\u0E27\u0E31\u0E2A\u0E14\u0E35\u0E0A\u0E32\u0E27\u0E42\u0E25\u0E01 \u10D2\u10D0\u10DB\u10D0\u10E0\u10EF\u10DD\u10D1\u10D0\n" +
  "English\u4E2D\u6587mixed\u0627\u0644\u0639\u0631\u0628\u064A\u0629text\u0939\u093F\u0928\u094D\u0926\u0940 \u{10348}\u{1D400}\u{1D401}\n" +
  pick(["\u4E00", "\u4E8C", "\u0627", "\u0915", "\u094D", "\uAC00", "a", "B", " ", ".", "\u3002", "1"], 4000));
// ---- case patterns (o200k's pattern separates cases: \p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M})
add("case",
  "HelloWorld iPhone camelCaseWord ALLCAPS'S ALLCAPS's XMLHttpRequest \u01C5ungla \u01C8ubljana " +
  "\u02B0\u02B1 a\u02B0b \u00C9COLE \u00E9cole \u0130stanbul \u1E9E\u00DF \u{1D400}bc\n" +
  pick(["A", "b", "C", "d", "\u01C5", "\u02B0", "\u00C9", "\u00E9", "'s", "'S", " ", "\u0301"], 4000));
// ---- combining marks
add("marks",
  "e\u0301 cafe\u0301 a\u0300\u0301\u0302\u0303 \u0301start \u0301 x \u0301\u0301 " +
  "Z\u0351\u036B\u0343\u036A\u0302\u036B\u033D\u034F\u0334\u0319\u0324\u031E\u0349\u035A\u032F\u031E\u0320\u034DA\u036B\u0357\u0334\u0362\u0335\u031C\u0330\u0354L\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030E\u0305\u035B\u0341\u0334\u033B\u0348\u034D\u0354\u0339O\u0342\u030C\u030C\u0358\u0328\u0335\u0339\u033B\u031D\u0333 " +
  "\u0915\u094D\u200D\u0937 n\u0303 1\u0301 .\u0301 \u0301\u0302! \u05D1\u05BC\u05B8 \u20DD\u20DE\n" +
  pick(["a", "e", "\u0301", "\u0308", "\u0327", " ", "\u0915", "\u093F", "\u094D", "1", "."], 3000));
// ---- special-token text: ordinary text, never special ids
add("special",
  "<|endoftext|> a<|endoftext|>b <|fim_prefix|><|fim_middle|><|fim_suffix|> <|endofprompt|> " +
  "<|im_start|>user\nhi<|im_end|>\n<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
  "<|eot_id|><|reserved_special_token_0|> <|endoftext|><|endoftext|> <| endoftext |> <|endoftext\n" +
  "<s></s>[INST]<unk>");
// ---- byte-order marks and NUL bytes
add("bom", "\uFEFFHello, world!\n\uFEFF \uFEFF\uFEFFmid\uFEFFdle\n\uFEFF");
add("nul", "a\0b\0\0 c \0\0\0\n\0" + "x\0".repeat(50) + " \0 \0\0 ");
// ---- punctuation, symbols, code, URLs, long mixed runs
add("punct",
  "!!! ??? ... --- ___ *** ((())) [[[]]] {{{}}} <<<>>> ;;; ::: \"\"\" ''' ``` ~~~ ^^^ ||| \\\\\\ ///\n" +
  "a...b!?c--d(e)f[g]h{i}j<k>l;m:n\"o'p`q~r^s|t\\u/v\n.\n..\n...\n!\r\n?\r\n" +
  "int main(void) { return x->y[0] == 0 ? 1 : -1; } // comment\n" +
  "https://example.com/a/b?c=d&e=f#g user@example.org C:\\path\\file.txt\n" +
  "\u00AB\u00BB \u201C\u201D \u2018\u2019 \u2026 \u2013 \u2014 \u00A7 \u00B6 \u2022 \u00B0 \u20AC \u00A3 \u00A5 \u00A9 \u00AE \u2122 \u2190 \u2192 \u2211 \u221E\n" +
  "!".repeat(20000));
// ---- runs with no split point (small enough for the JS references)
add("nosplit-a", "a".repeat(20000));
add("nosplit-word", (() => { let s = ""; while (s.length < 20000) s += rnd(3) ? word(50) : "a".repeat(50); return s; })());
add("nosplit-cjk", "\u4E00".repeat(5000) + pick(["\u4E00", "\u4E8C", "\u4E09", "\u56DB"], 5000));
add("nosplit-digits", "7".repeat(30000));
// ---- random mixtures of everything above
{
  const atoms = ["a", "b", "Z", "the", " ", "  ", "\n", "\r\n", "\t", "1", "22", "'s", "'LL", ".", ",", "!",
    "\u00e9", "e\u0301", "\u4E2D", "\u0627", "\u0915\u094D", "\uAC00", "\u{1F600}", "\u200D", "\uFEFF", "\0",
    "\u00a0", "\u3000", "<|endoftext|>", "--", "...", "\u2019"];
  for (let k = 0; k < 4; k++) add("random-" + k, pick(atoms, 5000));
  // without U+FEFF (which JavaScript's \s matches: see tokenizer-diff.sh),
  // with the special tokens of GPT-2 and Llama 3 as text
  const noBom = atoms.filter((a) => a !== "\uFEFF")
    .concat(["<|begin_of_text|>", "<|eot_id|>", "<|endoftext|>", "<|reserved_special_token_5|>"]);
  for (let k = 0; k < 2; k++) add("random-special-" + k, pick(noBom, 5000));
}
// ---- empty and tiny files
add("empty", "");
add("one-space", " ");
add("one-newline", "\n");
add("one-letter", "a");

fs.mkdirSync(out, { recursive: true });
for (const [name, text] of Object.entries(files))
  fs.writeFileSync(path.join(out, "edge-" + name + ".txt"), text, "utf8");
