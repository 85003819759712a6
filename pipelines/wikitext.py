"""Wikitext to plain sections (mwparserfromhell): templates, tables, references, files and lists stripped."""

from __future__ import annotations

import re

import mwparserfromhell
from mwparserfromhell.nodes import (
    Argument,
    Comment,
    ExternalLink,
    Heading,
    HTMLEntity,
    Tag,
    Template,
    Text,
    Wikilink,
)
from mwparserfromhell.wikicode import Wikicode

from negminer.pipelines.docpairs import Section
from negminer.pipelines.transforms.clean import clean_text

# Link namespaces whose target is not running text (files, categories) or another wiki (interlanguage).
_DROP_LINK = re.compile(r"^\s*:?\s*(file|image|media|category|[a-z]{2,3}(-[a-z]+)?)\s*:", re.IGNORECASE)
# Tags whose content is not running text.
_DROP_TAGS = frozenset(
    {"ref", "references", "table", "gallery", "math", "chem", "score", "timeline", "imagemap", "syntaxhighlight",
     "source", "pre", "code", "nowiki", "noinclude", "includeonly", "templatedata", "graph", "mapframe"}
)  # fmt: skip
_LIST_MARKUP = frozenset({"*", "#", ":", ";"})
_LIST_LINE = "\x00"  # marks a line that was a list item or indented text; such lines are not paragraphs
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_DISAMBIG_TEMPLATES = frozenset(
    {"disambiguation", "disambig", "dab", "disamb", "hndis", "geodis", "surname", "given name", "set index article",
     "disambiguation cleanup", "mil-unit-dis", "hospital disambiguation", "school disambiguation", "shipindex"}
)  # fmt: skip
# Residue of malformed markup that mwparserfromhell leaves as text (unbalanced refs, quotes, tables).
_RESIDUE_TAG = re.compile(r"<ref[^>]*>.*?</ref>|<ref[^>]*/>|</?[a-zA-Z][a-zA-Z0-9]*(\s[^<>]*)?/?>", re.DOTALL)
_RESIDUE_QUOTES = re.compile(r"'{2,}")
_RESIDUE_MARKUP = re.compile(r"\{\||\|\}|\{\{|\}\}|\[\[|\]\]|^=+|=+$")
# What removed templates leave behind: "born (; 1970)" -> "born (1970)", "( )" -> "".
_PARENS_LEAD = re.compile(r"\(\s*[;,]\s*")
_EMPTY_PARENS = re.compile(r"\s?\(\s*[;,]?\s*\)")
_REDIRECT = re.compile(r"^\s*#redirect", re.IGNORECASE)


def is_redirect_text(wikitext: str) -> bool:
    return bool(_REDIRECT.match(wikitext))


def is_disambiguation(title: str, code: Wikicode) -> bool:
    """A disambiguation page: '(disambiguation)' in the title or a disambiguation template on the page."""
    if title.endswith("(disambiguation)"):
        return True
    return any(str(t.name).strip().lower() in _DISAMBIG_TEMPLATES for t in code.filter_templates(recursive=False))


def _plain(nodes) -> str:
    return "".join(_node_text(n) for n in nodes)


def _node_text(node) -> str:
    if isinstance(node, Text):
        return node.value
    if isinstance(node, Wikilink):
        target = str(node.title)
        if _DROP_LINK.match(target):
            return ""
        return _plain((node.text or node.title).nodes)
    if isinstance(node, ExternalLink):
        return _plain(node.title.nodes) if node.title else ""
    if isinstance(node, HTMLEntity):
        return node.normalize()
    if isinstance(node, Tag):
        return _tag_text(node)
    if isinstance(node, (Template, Comment, Argument, Heading)):
        return ""
    return ""  # parser functions and anything else without running text


def _tag_text(node: Tag) -> str:
    """Tables and dropped tags vanish, list items start a list line, br/hr break; other tags keep their text."""
    tag = str(node.tag).strip().lower()
    if tag in _DROP_TAGS or node.wiki_markup == "{|":
        return ""
    if node.wiki_markup in _LIST_MARKUP or tag in ("li", "dd", "dt"):
        return "\n" + _LIST_LINE
    if tag == "br":
        return " "
    if tag == "hr":
        return "\n\n"
    return _plain(node.contents.nodes) if node.contents else ""


def _paragraphs(text: str) -> tuple[str, ...]:
    text = _MAGIC_WORD.sub("", text)
    out = []
    for block in _PARAGRAPH_BREAK.split(text):
        lines = [ln for ln in block.split("\n") if ln.strip() and not ln.startswith(_LIST_LINE)]
        para = _RESIDUE_TAG.sub("", _RESIDUE_QUOTES.sub("", " ".join(lines)))
        para = clean_text(_EMPTY_PARENS.sub("", _PARENS_LEAD.sub("(", para)))
        # Markup the parser could not pair up (an unclosed table or template) stays as text: drop it.
        if para and not _RESIDUE_MARKUP.search(para):
            out.append(para)
    return tuple(out)


def parse_page(title: str, wikitext: str) -> tuple[Section, ...] | str:
    """A main-namespace page's sections, or the reason it gives no text (`redirect`, `disambiguation`)."""
    if is_redirect_text(wikitext):
        return "redirect"
    code = mwparserfromhell.parse(wikitext)
    if is_disambiguation(title, code):
        return "disambiguation"
    return code_sections(code)


def code_sections(code: Wikicode) -> tuple[Section, ...]:
    """The page's sections with their heading paths (lead first, path ()) and plain-text paragraphs.

    Sections without paragraphs are kept so heading paths stay right; a heading that is empty after
    stripping markup is dropped from the path.
    """
    sections: list[Section] = []
    path: list[tuple[int, str]] = []  # (level, heading) of the current section and its parents
    buf: list[str] = []

    def flush() -> None:
        sections.append(Section(tuple(h for _, h in path), _paragraphs("".join(buf))))
        buf.clear()

    for node in code.nodes:
        if isinstance(node, Heading):
            flush()
            heading = clean_text(_plain(node.title.nodes))
            while path and path[-1][0] >= node.level:
                path.pop()
            if heading:
                path.append((node.level, heading))
            continue
        buf.append(_node_text(node))
    flush()
    return tuple(s for s in sections if s.paragraphs or s.path)


_HEADING_LINE_MAX_WORDS = 8


def text_sections(text: str, detect_headings: bool) -> tuple[Section, ...]:
    """Plain text (one paragraph per line) to sections; with `detect_headings`, a short line without
    final punctuation (the Hugging Face `wikimedia/wikipedia` layout keeps headings so) starts a section."""
    sections: list[Section] = []
    path: tuple[str, ...] = ()
    paras: list[str] = []
    for raw in text.split("\n"):
        # Converters leave some markup behind (WikiExtractor: <nowiki>, stray ]]): strip tags, drop the rest.
        line = clean_text(_RESIDUE_TAG.sub("", raw))
        if not line or _RESIDUE_MARKUP.search(line):
            continue
        words = line.split()
        if detect_headings and len(words) <= _HEADING_LINE_MAX_WORDS and line[-1] not in ".!?:;,\"')]":
            sections.append(Section(path, tuple(paras)))
            path, paras = (line,), []
            continue
        paras.append(line)
    sections.append(Section(path, tuple(paras)))
    return tuple(s for s in sections if s.paragraphs or s.path)
