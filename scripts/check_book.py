#!/usr/bin/env python3
"""Check the built HTML book the way a reader sees it: offline, in a real browser.

Usage: python scripts/check_book.py [BUILD_DIR] (default: _build/html)

1. Static, every page: no script, stylesheet, font, image or frame is loaded from an http(s) URL
   (in tags, in inline scripts, in the CSS files the pages load); every local asset a page names
   exists; every chapter page (``book/chapters/``) has at least one figure and offers its executed
   notebook for download (a link to ``_sources/book/chapters/<name>.ipynb``, present in the build).
2. In headless Chromium (Debian's ``chromium``), every page with math, served from a local HTTP
   server with every other host unresolvable: MathJax typesets it (``mjx-container`` elements, no
   MathJax error, no raw TeX left in the text), no local request fails (MathJax's fonts and
   extensions included), and the page asks for nothing outside the local server (Chromium's net log).
3. In headless Chromium, every page at a desktop width (1280 px) and a phone width (390 px): nothing
   in the text column is wider than the column or cut off. At the desktop width no box needs a
   horizontal scrollbar either; at the phone width a code block or table may scroll inside its own
   box, but the page itself never scrolls sideways and nothing is clipped.

Exit status 0 when every check passes, 1 when one fails, 2 when Chromium or the build is missing.
Only the standard library is used, so the script runs with any Python 3.9+.
"""
from __future__ import annotations

import argparse
import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

REMOTE = re.compile(r"^(?:https?:)?//", re.I)
# XML namespaces appear in inline SVG and data URLs; they are names, never fetched.
NAMESPACE = re.compile(r"https?://www\.w3\.org/[\w/.#-]*", re.I)
URL_IN_TEXT = re.compile(r"https?://[^\s\"'<>)]+", re.I)
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])([^'")\s]+)""", re.I)
# What MathJax leaves behind when it did not run or could not parse: delimiters, TeX commands, or
# $...$ around TeX-looking text.
RAW_TEX = re.compile(
    r"\\\(|\\\)|\\\[|\\\]|\$\$|\\(?:begin|end|frac|mathcal|mathbb|tau|sum|log|left|right|operatorname)\b"
    r"|\$[^$\n]{0,200}?[\\_^{][^$\n]{0,200}?\$"
)
ASSET_ATTRS = {  # tag -> attribute naming something the browser loads
    "script": "src", "img": "src", "iframe": "src", "source": "src", "video": "src",
    "audio": "src", "embed": "src", "object": "data", "track": "src", "input": "src",
}
LOADED_LINK_RELS = {"stylesheet", "preload", "modulepreload", "icon", "shortcut", "apple-touch-icon",
                    "manifest", "prefetch", "preconnect", "dns-prefetch", "mask-icon"}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class PageParser(HTMLParser):
    """Collects what a page loads, its images and links, inline scripts and styles, whether it has math."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.loads: list[tuple[str, str]] = []  # (tag, url)
        self.images: list[str] = []
        self.links: list[str] = []  # href of every <a>
        self.inline: list[str] = []  # bodies of inline <script> and <style>
        self.math = False
        self.redirect = False
        self._inline_tag: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag in ASSET_ATTRS and a.get(ASSET_ATTRS[tag]):
            self.loads.append((tag, a[ASSET_ATTRS[tag]]))
            if tag == "img":
                self.images.append(a["src"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "link" and set(a.get("rel", "").lower().split()) & LOADED_LINK_RELS and a.get("href"):
            self.loads.append(("link", a["href"]))
        if tag in ("script", "style") and not a.get("src"):
            self._inline_tag = tag
            self.inline.append("")
        if "math" in a.get("class", "").split():
            self.math = True
        if tag == "meta" and a.get("http-equiv", "").lower() == "refresh":
            self.redirect = True

    def handle_endtag(self, tag: str) -> None:
        if tag == self._inline_tag:
            self._inline_tag = None

    def handle_data(self, data: str) -> None:
        if self._inline_tag:
            self.inline[-1] += data


def local_target(page: Path, url: str, root: Path) -> Path | None:
    """The file a relative or root-relative URL names, or None for data:/about:/anchors."""
    if url.startswith(("data:", "about:", "javascript:", "blob:", "#", "mailto:")):
        return None
    path = unquote(urlsplit(url).path)
    if not path:
        return None
    return (root / path.lstrip("/")) if path.startswith("/") else (page.parent / path)


def remote_urls(text: str) -> list[str]:
    return URL_IN_TEXT.findall(NAMESPACE.sub("", text))


def check_css(css: Path, root: Path, seen: set[Path], problems: list[str]) -> None:
    """Remote url()/@import in a stylesheet (fonts live there), following local @imports."""
    css = css.resolve()
    if css in seen or not css.is_file():
        return
    seen.add(css)
    for url in CSS_URL.findall(css.read_text(errors="replace")):
        if REMOTE.match(url):
            problems.append(f"{css.relative_to(root)}: loads {url}")
        elif url.endswith(".css"):
            target = local_target(css, url, root)
            if target is not None:
                check_css(target, root, seen, problems)


def chapter_problems(page: Path, rel: Path, parser: PageParser, root: Path) -> list[str]:
    """A chapter page shows at least one figure and links the executed notebook it was built from."""
    problems = [] if parser.images else [f"{rel}: a chapter page without any figure (<img>)"]
    notebook = Path("_sources") / rel.with_suffix(".ipynb")
    linked = {target.resolve() for href in parser.links
              if (target := local_target(page, href, root)) is not None}
    if (root / notebook).resolve() not in linked or not (root / notebook).is_file():
        problems.append(f"{rel}: no download link to its executed notebook {notebook} in the build")
    return problems


def parsed_pages(root: Path):
    """(page, path relative to ``root``, its :class:`PageParser`) for every HTML page of the build,
    theme templates (``_static``) and page sources (``_sources``) left out."""
    for page in sorted(root.rglob("*.html")):
        rel = page.relative_to(root)
        if rel.parts[0] in ("_static", "_sources"):
            continue
        parser = PageParser()
        parser.feed(page.read_text(errors="replace"))
        yield page, rel, parser


def static_checks(root: Path) -> tuple[list[str], list[Path]]:
    """Problems found without a browser, and the pages that hold math."""
    problems: list[str] = []
    math_pages: list[Path] = []
    seen_css: set[Path] = set()
    for page, rel, parser in parsed_pages(root):
        for tag, url in parser.loads:
            if REMOTE.match(url):
                problems.append(f"{rel}: <{tag}> loads the remote {url}")
                continue
            target = local_target(page, url, root)
            if target is not None and not target.is_file():
                problems.append(f"{rel}: <{tag}> names {url}, which is not in the build")
            elif target is not None and target.suffix == ".css":
                check_css(target, root, seen_css, problems)
        for src in parser.images:
            target = local_target(page, src, root)
            if target is not None and target.is_file() and target.stat().st_size == 0:
                problems.append(f"{rel}: image {src} is empty")
        for body in parser.inline:
            for url in remote_urls(body):
                problems.append(f"{rel}: an inline script or style names the remote {url}")
        if "chapters" in rel.parts and not parser.redirect:
            problems += chapter_problems(page, rel, parser, root)
        if parser.math and not parser.redirect:
            math_pages.append(page)
    return problems, math_pages


# Widths the layout check opens every page at: (name, window width in CSS px, strict). Strict: no box
# in the text column may need a horizontal scrollbar; otherwise only clipping and sideways overflow count.
LAYOUT_WIDTHS = (("desktop", 1280, True), ("phone", 390, False))
LAYOUT_QUERY = "clmini-layout"
# Injected into a page served with ?clmini-layout=<strict>: once the page (and MathJax, when it
# typesets) has settled, it records what is wider than the text column in <html data-clmini-layout>.
LAYOUT_SCRIPT = r"""
<script>
(function () {
  const strict = new URLSearchParams(location.search).get("%(query)s") === "1";
  function name(el) {
    const cls = (el.getAttribute("class") || "").trim().split(/\s+/).filter(Boolean).slice(0, 3);
    const text = (el.innerText || el.textContent || "").replace(/\s+/g, " ").trim().slice(0, 50);
    return el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (cls.length ? "." + cls.join(".") : "")
      + (text ? ' "' + text + '"' : "");
  }
  function widest(el) {  // the descendant reaching furthest right: what makes el too wide
    const edge = el.getBoundingClientRect().right;
    let best = null, right = edge + 1;
    for (const d of el.querySelectorAll("*")) {
      const r = d.getBoundingClientRect().right;
      if (r > right) { right = r; best = d; }
    }
    return best ? ", because of " + name(best) : "";
  }
  function scrolls(el) {
    const x = getComputedStyle(el).overflowX;
    return x === "auto" || x === "scroll";
  }
  function measure() {
    // MathJax's assistive MathML is clipped to 1 px and invisible, but adds to its boxes' scroll width.
    const hide = document.createElement("style");
    hide.textContent = "mjx-assistive-mml { display: none !important; }";
    document.head.appendChild(hide);
    const root = document.documentElement, width = root.clientWidth, problems = [];
    if (root.scrollWidth > width + 1) {
      problems.push("the page scrolls sideways: " + root.scrollWidth + " px of content in a " + width + " px window");
    }
    const column = document.querySelector("article") || document.querySelector("main") || document.body;
    const right = column.getBoundingClientRect().right;
    const reported = new Set();
    for (const el of column.querySelectorAll("*")) {
      const style = getComputedStyle(el);
      if (style.display === "none" || style.visibility === "hidden" || el.closest("[hidden], details:not([open]) > :not(summary)")) continue;
      let inside = false;
      for (let a = el.parentElement; a && a !== column; a = a.parentElement) {
        if (reported.has(a) || scrolls(a)) { inside = true; break; }
      }
      if (inside) continue;
      const box = el.getBoundingClientRect();
      if (box.width === 0 || box.height === 0) continue;
      const wider = el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0;
      if (wider && (style.overflowX === "hidden" || style.overflowX === "clip")) {
        problems.push("cut off on the right (" + el.scrollWidth + " px in " + el.clientWidth + " px): " + name(el)
                      + widest(el));
        reported.add(el);
      } else if (wider && strict && scrolls(el)) {
        problems.push("needs a horizontal scrollbar (" + el.scrollWidth + " px in " + el.clientWidth + " px): " + name(el));
        reported.add(el);
      } else if (box.right > right + 1) {
        problems.push("sticks out of the text column by " + Math.round(box.right - right) + " px: " + name(el));
        reported.add(el);
      }
    }
    root.setAttribute("data-clmini-layout", JSON.stringify({width: width, problems: problems}));
  }
  function settle() {
    const typeset = window.MathJax && MathJax.startup && MathJax.startup.promise;
    (typeset || Promise.resolve()).then(() => setTimeout(measure, 500), () => setTimeout(measure, 500));
  }
  if (document.readyState === "complete") settle(); else window.addEventListener("load", settle);
})();
</script>
""" % {"query": LAYOUT_QUERY}


def content_pages(root: Path) -> list[Path]:
    """Every page a reader lands on: the build's HTML pages except theme files, sources, search and
    redirects."""
    return [page for page, rel, parser in parsed_pages(root)
            if rel.name not in ("search.html", "genindex.html") and not parser.redirect]


# Headless Chromium's window is at least 500 px wide, so each page is measured in an iframe of the
# width under test (media queries see the iframe's width); the frame copies the page's report up.
LAYOUT_FRAME = "/__clmini_layout__.html"
LAYOUT_FRAME_HTML = """<!DOCTYPE html>
<html><body style="margin:0">
<iframe id="page" src="/%(page)s?%(query)s=%(strict)s" style="border:0;width:%(width)dpx;height:900px"></iframe>
<script>
(function poll() {
  const frame = document.getElementById("page").contentDocument;
  const report = frame && frame.documentElement.getAttribute("data-clmini-layout");
  if (report) document.documentElement.setAttribute("data-clmini-layout", report);
  else setTimeout(poll, 100);
})();
</script>
</body></html>
"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the build and records (status, path) of every request. An HTML page requested with
    ``?clmini-layout=...`` is served with :data:`LAYOUT_SCRIPT` injected before ``</body>``;
    :data:`LAYOUT_FRAME` shows a page in an iframe of a given width."""

    log: list[tuple[int, str]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        parts = urlsplit(self.path)
        if parts.path == LAYOUT_FRAME:
            query = dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair)
            return self._send_html(LAYOUT_FRAME_HTML % {"page": query.get("page", ""), "width": int(query.get("width", 0)),
                                                        "strict": query.get("strict", "0"), "query": LAYOUT_QUERY})
        if LAYOUT_QUERY not in parts.query or not parts.path.endswith(".html"):
            return super().do_GET()
        page = Path(self.directory) / unquote(parts.path).lstrip("/")
        if not page.is_file():
            return super().do_GET()
        text = page.read_text(errors="replace")
        at = text.lower().rfind("</body>")
        self._send_html(text[:at] + LAYOUT_SCRIPT + text[at:] if at >= 0 else text + LAYOUT_SCRIPT)

    def _send_html(self, text: str) -> None:
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code="-", size="-") -> None:  # noqa: D401 (http.server's signature)
        self.log.append((int(code) if str(code).isdigit() else 0, self.path))

    def log_message(self, format: str, *args) -> None:
        pass


def find_chromium(explicit: str | None) -> str | None:
    candidates = [explicit] if explicit else [os.environ.get("CHROMIUM"), *CHROMIUM_NAMES]
    return next((shutil.which(c) for c in candidates if c and shutil.which(c)), None)


def page_requests(netlog: Path, origin: str) -> list[str]:
    """URLs the page itself asked for outside ``origin`` (the browser's own traffic excluded)."""
    try:
        data = json.loads(netlog.read_text())
    except (OSError, ValueError):
        return []  # Chromium may leave the log unterminated; the static checks still hold
    start = data.get("constants", {}).get("logEventTypes", {}).get("URL_REQUEST_START_JOB")
    urls = []
    for event in data.get("events", []):
        params = event.get("params", {})
        if event.get("type") == start and str(params.get("initiator", "")).startswith(origin):
            url = params.get("url", "")
            if not url.startswith((origin, "data:", "blob:")):
                urls.append(url)
    return urls


def rendered_text(dom: str) -> str:
    """The DOM's visible text, with code, scripts, styles and typeset math removed."""
    for tag in ("script", "style", "pre", "code", "mjx-container", "textarea", "title"):
        dom = re.sub(rf"<{tag}\b.*?</{tag}>", " ", dom, flags=re.S | re.I)
    return re.sub(r"<[^>]+>", " ", dom)


def chromium_dom(chromium: str, url: str, budget_ms: int, tmp: str, *extra: str) -> subprocess.CompletedProcess:
    """Headless Chromium's DOM of ``url`` after ``budget_ms`` of virtual time, offline but for 127.0.0.1."""
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--no-default-browser-check", f"--user-data-dir={tmp}/profile",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        *extra, f"--virtual-time-budget={budget_ms}", "--dump-dom", url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


class Server:
    """The build on a local HTTP server (a context manager giving its origin)."""

    def __init__(self, root: Path) -> None:
        QuietHandler.log = []
        handler = functools.partial(QuietHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.origin

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def layout_checks(root: Path, pages: list[Path], chromium: str, budget_ms: int) -> list[str]:
    """What sticks out of the text column, is cut off, or (desktop) needs a scrollbar, at each width."""
    problems: list[str] = []
    with Server(root) as origin:
        for page in pages:
            rel = page.relative_to(root).as_posix()
            for width_name, width, strict in LAYOUT_WIDTHS:
                with tempfile.TemporaryDirectory(prefix="check_book_") as tmp:
                    url = f"{origin}{LAYOUT_FRAME}?page={rel}&width={width}&strict={int(strict)}"
                    done = chromium_dom(chromium, url, budget_ms, tmp, f"--window-size={width + 100},1000")
                found = re.search(r'<html[^>]*\sdata-clmini-layout="([^"]*)"', done.stdout)
                if found is None:
                    problems.append(f"{rel} at {width} px: the layout was not measured "
                                    f"(exit {done.returncode}): {done.stderr[-300:]}")
                    continue
                report = json.loads(html.unescape(found.group(1)))
                problems += [f"{rel} at {width} px ({width_name}): {p}" for p in report["problems"]]
                print(f"  {rel} at {width} px: {len(report['problems'])} layout problem(s)", flush=True)
    return problems


def browser_checks(root: Path, pages: list[Path], chromium: str, budget_ms: int) -> list[str]:
    problems: list[str] = []
    with Server(root) as origin:
        for page in pages:
            rel = page.relative_to(root).as_posix()
            with tempfile.TemporaryDirectory(prefix="check_book_") as tmp:
                netlog = Path(tmp) / "netlog.json"
                done = chromium_dom(chromium, f"{origin}/{rel}", budget_ms, tmp, f"--log-net-log={netlog}")
                dom = done.stdout
                if done.returncode != 0 or "<html" not in dom.lower():
                    problems.append(f"{rel}: chromium failed (exit {done.returncode}): {done.stderr[-500:]}")
                    continue
                typeset = dom.count("<mjx-container")
                if typeset == 0:
                    problems.append(f"{rel}: MathJax did not typeset any math (no <mjx-container>)")
                if "<mjx-merror" in dom or "data-mjx-error=" in dom:
                    problems.append(f"{rel}: MathJax reports a TeX error (mjx-merror)")
                leftover = sorted(set(RAW_TEX.findall(rendered_text(dom))))
                if leftover:
                    problems.append(f"{rel}: raw TeX left in the rendered text: {leftover[:5]}")
                for url in page_requests(netlog, origin):
                    problems.append(f"{rel}: the page requested the remote {url}")
                print(f"  {rel}: {typeset} formulas typeset", flush=True)
    failed = sorted({path for status, path in QuietHandler.log
                     if status >= 400 and not path.startswith("/favicon.ico")})
    problems += [f"a page requested {path}, which the build does not have" for path in failed]
    fonts = [path for status, path in QuietHandler.log if status == 200 and "/mathjax/" in path
             and path.split("?")[0].endswith((".woff", ".woff2"))]
    if pages and not fonts:
        problems.append("MathJax loaded no font file from the build")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("build", nargs="?", type=Path, default=Path("_build/html"),
                        help="the HTML build directory (default: _build/html)")
    parser.add_argument("--chromium", help="the browser binary (default: $CHROMIUM, then chromium)")
    parser.add_argument("--budget-ms", type=int, default=15000,
                        help="virtual time a page gets to run its scripts (default: 15000)")
    args = parser.parse_args(argv)

    root = args.build.resolve()
    if not (root / "index.html").is_file():
        print(f"error: no built book in {root} (run `make book` first)", file=sys.stderr)
        return 2
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("error: no Chromium found; install Debian's `chromium` (apt-get install -y chromium) "
              "or pass --chromium", file=sys.stderr)
        return 2

    problems, math_pages = static_checks(root)
    print(f"checking {len(math_pages)} pages with math in {Path(chromium).name}:", flush=True)
    problems += browser_checks(root, math_pages, chromium, args.budget_ms)
    pages = content_pages(root)
    print(f"checking the layout of {len(pages)} pages at " + " and ".join(f"{w} px" for _, w, _ in LAYOUT_WIDTHS)
          + ":", flush=True)
    problems += layout_checks(root, pages, chromium, args.budget_ms)
    if problems:
        print(f"\nFAILED: {len(problems)} problem(s) in {root}:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"OK: {root} loads nothing remote, renders all its math offline and fits its pages' width")
    return 0


if __name__ == "__main__":
    sys.exit(main())
