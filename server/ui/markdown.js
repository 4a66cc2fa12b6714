// A small Markdown renderer for answers: fenced and inline code, headings, lists, quotes, bold, italics,
// links. Everything is escaped first: the model's text never becomes markup of its own.
"use strict";

const Markdown = (() => {
  const escape = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

  function inline(text) {
    const codes = [];
    let out = escape(text).replace(/`([^`]+)`/g, (_, code) => { codes.push(code); return "\u0000" + (codes.length - 1) + "\u0000"; });
    out = out.replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
             .replace(/(^|[^*])\*([^*\s][^*]*)\*/g, "$1<em>$2</em>")
             .replace(/\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g, '<a href="$2" rel="noopener noreferrer" target="_blank">$1</a>');
    return out.replace(/\u0000(\d+)\u0000/g, (_, i) => "<code>" + codes[Number(i)] + "</code>");
  }

  function render(text) {
    const lines = text.split("\n");
    const html = [];
    let list = null, paragraph = [];
    const flush = () => {
      if (paragraph.length) html.push("<p>" + paragraph.map(inline).join("<br>") + "</p>");
      paragraph = [];
      if (list) { html.push("</" + list + ">"); list = null; }
    };
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      const fence = line.match(/^\s*```\s*([\w+-]*)/);
      if (fence) {
        flush();
        const code = [];
        for (i++; i < lines.length && !/^\s*```/.test(lines[i]); i++) code.push(lines[i]);
        const lang = fence[1] ? ' class="language-' + escape(fence[1]) + '"' : "";
        html.push("<pre><code" + lang + ">" + escape(code.join("\n")) + "</code></pre>");
        continue;
      }
      const heading = line.match(/^(#{1,6})\s+(.*)$/);
      const item = line.match(/^\s*([-*+]|\d+[.)])\s+(.*)$/);
      if (heading) { flush(); html.push("<h" + heading[1].length + ">" + inline(heading[2]) + "</h" + heading[1].length + ">"); }
      else if (item) {
        if (paragraph.length) { const keep = list; list = null; flush(); list = keep; }
        const kind = /\d/.test(item[1]) ? "ol" : "ul";
        if (list !== kind) { if (list) html.push("</" + list + ">"); html.push("<" + kind + ">"); list = kind; }
        html.push("<li>" + inline(item[2]) + "</li>");
      } else if (/^>\s?/.test(line)) { flush(); html.push("<blockquote>" + inline(line.replace(/^>\s?/, "")) + "</blockquote>"); }
      else if (!line.trim()) flush();
      else { if (list) { html.push("</" + list + ">"); list = null; } paragraph.push(line); }
    }
    flush();
    return html.join("");
  }

  return {render, escape};
})();
