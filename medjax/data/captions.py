"""Caption cleaning as Open-Sora / PixArt-alpha / DeepFloyd IF apply before T5.

`clean_caption` lower-cases a caption and strips what a web-scraped caption carries besides its
description (URLs, HTML, @handles, CJK text, file names, long ids, shop phrases, stray punctuation),
normalising dashes and quotes; `preprocess_caption` applies it twice, as Open-Sora does. Written
from the steps of Open-Sora's `text_preprocessing`, with the standard library only: HTML is stripped
with `html.parser`, and `ftfy`'s mojibake repair is not applied (docs/deviations.md).
"""

import html
import html.parser
import re
import urllib.parse

_URL_TLDS = r"(?:com|co|ru|net|org|edu|gov|it)"
# A scheme URL ("http://...", "https:x") or a bare host "name.tld/path", each with an optional "www:".
_URL = re.compile(
  rf"\b(?:(?:https?|www):(?:/{{1,3}}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+\.{_URL_TLDS}[\w/-]*\b/?(?!@))"
)
_CJK = "\u31c0-\u31ef\u31f0-\u31ff\u3200-\u32ff\u3300-\u33ff\u3400-\u4dbf\u4dc0-\u4dff\u4e00-\u9fff"
_DASHES = (
  "\u002d\u058a\u05be\u1400\u1806\u2010-\u2015\u2e17\u2e1a\u2e3a\u2e3b\u2e40\u301c\u3030\u30a0"
  "\ufe31\ufe32\ufe58\ufe63\uff0d"
)
_BAD_PUNCT = r"[#®•©™&@·º½¾¿¡§~()\[\]{}|\\/*]+"
_MEDIA = r"(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)"

# (pattern, replacement) before and after the HTML / entity clean-up, in order.
_BEFORE = [
  (r"<person>", "person"),
  (_URL, ""),
  ("HTML", None),
  (r"@[\w\d]+\b", ""),  # @handles
  (f"[{_CJK}]+", ""),
  (f"[{_DASHES}]+", "-"),
  (r"[`´«»“”¨]", '"'),
  (r"[‘’]", "'"),
  (r"&quot;?", ""),
  (r"&amp", ""),
  (r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", " "),  # IP addresses
  (r"\d:\d\d\s+$", ""),  # trailing article ids
  (r"\\n", " "),  # literal backslash-n
  (r"#\d{1,3}\b", ""),
  (r"#\d{5,}\b", ""),
  (r"\b\d{6,}\b", ""),
  (rf"\S+\.{_MEDIA}", ""),  # file names
  (r"[\"']{2,}", '"'),
  (r"\.{2,}", " "),
  (_BAD_PUNCT, " "),
  (r"\s+\.\s+", " "),
]
_AFTER = [
  (r"\b[a-zA-Z]{1,3}\d{3,15}\b", ""),  # jc6640
  (r"\b[a-zA-Z]+\d+[a-zA-Z]+\b", ""),  # jc6640vc
  (r"\b\d+[a-zA-Z]+\d+\b", ""),  # 6640vc231
  (r"(?:worldwide\s+)?(?:free\s+)?shipping", ""),
  (r"(?:free\s)?download(?:\sfree)?", ""),
  (r"\bclick\b\s(?:for|on)\s\w+", ""),
  (rf"\b{_MEDIA}(?:\simages?)?", ""),
  (r"\bpage\s+\d+\b", ""),
  (r"\b\d*[a-zA-Z]+\d+[a-zA-Z]+\d+[a-zA-Z\d]*\b", " "),  # j2d1a2a...
  (r"\b\d+\.?\d*[xх×]\d+\.?\d*\b", ""),  # sizes 800x600
  (r"\b\s+:\s+", ": "),
  (r"(\D[,./])\b", r"\1 "),
  (r"\s+", " "),
]
_EDGES = [
  (r"^[\"']([\w\W]+)[\"']$", r"\1"),  # one pair of enclosing quotes
  (r"^['_,\-:;]", ""),
  (r"['_,\-:+]$", ""),
  (r"^\.\S+$", ""),
]


class _TextOnly(html.parser.HTMLParser):
  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.parts = []

  def handle_data(self, data):
    self.parts.append(data)


def strip_html(text: str) -> str:
  """The text content of `text` with its tags removed and character references decoded."""
  parser = _TextOnly()
  parser.feed(text)
  parser.close()
  return "".join(parser.parts)


def _apply(steps, text: str) -> str:
  for pattern, repl in steps:
    text = strip_html(text) if pattern == "HTML" else re.sub(pattern, repl, text)
  return text


def clean_caption(caption) -> str:
  """One pass of Open-Sora's caption cleaning (lower-cased; see the module docstring)."""
  if not isinstance(caption, str):
    raise ValueError(f"caption: expected a string, got {type(caption).__name__} {caption!r}")
  text = urllib.parse.unquote_plus(caption).strip().lower()
  text = _apply(_BEFORE, text)
  if len(re.findall(r"[-_]", text)) > 3:  # this-is-a-slug / this_is_a_slug
    text = re.sub(r"[-_]", " ", text)
  text = html.unescape(html.unescape(text)).strip()
  text = _apply(_AFTER, text)  # (Open-Sora strips only after the edge rules)
  return _apply(_EDGES, text).strip()


def preprocess_caption(caption) -> str:
  """Open-Sora's `text_preprocessing`: `clean_caption` applied twice."""
  return clean_caption(clean_caption(caption))
